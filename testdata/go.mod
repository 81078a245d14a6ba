module allocwatch.test

go 1.21
