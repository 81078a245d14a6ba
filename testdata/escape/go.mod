module allocwatch.test/escape

go 1.21
