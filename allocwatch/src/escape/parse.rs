//! Parsing the text the Go compiler prints with `-gcflags=-m=2`, as relayed
//! by `go build` (a `# import/path` line before each package's output).
//!
//! Only what allocwatch uses is kept:
//! - heap decisions: `moved to heap: x` and `EXPR escapes to heap`, each
//!   with the explanation block that precedes it at the same position
//!   (`x escapes to heap:` / `… escapes to heap in F:` since Go 1.25, then
//!   `flow: DST = SRC:` (`←` since Go 1.25) and `from EXPR (why) at POS`
//!   lines);
//! - `EXPR does not escape` (Go ≥ 1.25 keeps a non-escaping `make` of
//!   non-constant size on the stack only when it fits in 32 bytes);
//! - function declarations, from the `can inline F …` / `cannot inline F: …`
//!   lines `-m=2` prints for every function at its declaration;
//! - the positions of function literals.
//!
//! The parser never fails: lines it does not understand are skipped.

/// A source position as the compiler printed it (`file` is not normalized).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pos {
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// What a heap decision is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// `moved to heap: NAME`: a declared variable.
    Moved(String),
    /// `EXPR escapes to heap`: the storage an expression allocates.
    Expr(String),
}

/// One step of a flow: `from EXPR (why) at POS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub expr: String,
    pub why: String,
    pub at: Option<Pos>,
}

/// One `flow: DST ← SRC` edge and the steps explaining it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// `DST ← SRC`, with `=` (Go < 1.25) normalized to `←`.
    pub edge: String,
    pub steps: Vec<Step>,
}

/// A heap decision of the compiler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeapDiag {
    /// The import path from the `# …` line before it.
    pub package: String,
    pub pos: Pos,
    pub subject: Subject,
    /// The explanation (`-m=2`); empty with `-m`.
    pub flows: Vec<Flow>,
}

/// `can inline F` / `cannot inline F`: where function `F` is declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncDecl {
    pub package: String,
    /// As the compiler prints it, without package: `newOrder`,
    /// `(*store).add`, `handleOrders.func1`, `Map[go.shape.int]`.
    pub name: String,
    pub pos: Pos,
}

/// Everything kept from one `go build -gcflags=…-m=2` run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompilerOutput {
    pub heap: Vec<HeapDiag>,
    /// `EXPR does not escape` (package, position, expression).
    pub no_escape: Vec<(String, Pos, String)>,
    pub funcs: Vec<FuncDecl>,
    /// Positions of function literals (escaping or not).
    pub func_literals: Vec<Pos>,
}

/// Splits `FILE:LINE:COL: MESSAGE` (or `FILE:LINE: MESSAGE`).
fn split_pos(line: &str) -> Option<(Pos, &str)> {
    let bytes = line.as_bytes();
    let mut i = 0;
    while let Some(off) = line[i..].find(':') {
        let colon = i + off;
        // Digits, optionally ":digits", then ": ".
        let mut j = colon + 1;
        let start_line = j;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j > start_line {
            let line_no: u32 = line[start_line..j].parse().ok()?;
            let mut col = 0;
            let mut k = j;
            if bytes.get(k) == Some(&b':') {
                let start_col = k + 1;
                let mut m = start_col;
                while m < bytes.len() && bytes[m].is_ascii_digit() {
                    m += 1;
                }
                if m > start_col && bytes.get(m) == Some(&b':') {
                    col = line[start_col..m].parse().ok()?;
                    k = m;
                }
            }
            if bytes.get(k) == Some(&b':') && bytes.get(k + 1) == Some(&b' ') && colon > 0 {
                let pos = Pos {
                    file: line[..colon].to_string(),
                    line: line_no,
                    col,
                };
                return Some((pos, &line[k + 2..]));
            }
        }
        i = colon + 1;
    }
    None
}

/// `from EXPR (why) at POS` (without the `from `).
fn parse_step(s: &str) -> Option<Step> {
    let (left, at) = match s.rfind(" at ") {
        Some(i) => (
            &s[..i],
            split_pos(&format!("{}: x", &s[i + 4..])).map(|p| p.0),
        ),
        None => (s, None),
    };
    let left = left.strip_suffix(')')?;
    let open = left.rfind(" (")?;
    Some(Step {
        expr: left[..open].to_string(),
        why: left[open + 2..].to_string(),
        at,
    })
}

/// The subject of an explanation header: `X escapes to heap:` or
/// `X escapes to heap in F:`.
fn header_subject(msg: &str) -> Option<&str> {
    let body = msg.strip_suffix(':')?;
    let i = body.rfind(" escapes to heap")?;
    let rest = &body[i + " escapes to heap".len()..];
    (rest.is_empty() || rest.starts_with(" in ")).then_some(&body[..i])
}

/// The function name of `can inline NAME …` / `cannot inline NAME: …`:
/// up to the first `: `, ` with cost` or ` as: ` outside brackets.
fn inline_name(rest: &str) -> &str {
    let mut depth = 0i32;
    let b = rest.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'[' | b'(' | b'{' => depth += 1,
            b']' | b')' | b'}' => depth -= 1,
            b':' if depth <= 0 && b.get(i + 1) == Some(&b' ') => return &rest[..i],
            b' ' if depth <= 0
                && (rest[i..].starts_with(" with cost") || rest[i..].starts_with(" as:")) =>
            {
                return &rest[..i];
            }
            _ => {}
        }
    }
    rest
}

/// An explanation block waiting for its final `moved to heap` / `escapes to heap` line.
struct Block {
    pos: Pos,
    subject: String,
    flows: Vec<Flow>,
}

/// Parses the combined output of `go build -gcflags=…=-m=2`.
#[must_use]
pub fn parse(text: &str) -> CompilerOutput {
    let mut p = Parser::default();
    for raw in text.lines() {
        let line = raw.trim_end();
        if let Some(pkg) = line.strip_prefix("# ") {
            p.package = pkg.split_whitespace().next().unwrap_or("").to_string();
            p.current = None;
            continue;
        }
        let Some((pos, msg)) = split_pos(line) else {
            continue;
        };
        if msg.starts_with(' ') {
            p.continuation(msg.trim_start());
        } else {
            p.current = None;
            p.message(pos, msg);
        }
    }
    let mut out = p.out;
    out.func_literals.sort();
    out.func_literals.dedup();
    out
}

/// The parser's state between lines.
#[derive(Default)]
struct Parser {
    out: CompilerOutput,
    /// The import path of the `# …` line before.
    package: String,
    pending: Vec<Block>,
    /// Index into `pending` of the block continuation lines belong to;
    /// `None` after a header allocwatch ignores (parameter leaks).
    current: Option<usize>,
}

impl Parser {
    /// An indented `flow: …` or `from …` line of the current block.
    fn continuation(&mut self, m: &str) {
        let Some(b) = self.current.and_then(|i| self.pending.get_mut(i)) else {
            return;
        };
        if let Some(edge) = m.strip_prefix("flow: ") {
            let edge = edge.strip_suffix(':').unwrap_or(edge);
            b.flows.push(Flow {
                edge: edge.replacen(" = ", " ← ", 1),
                steps: Vec::new(),
            });
        } else if let Some(step) = m.strip_prefix("from ").and_then(parse_step)
            && let Some(f) = b.flows.last_mut()
        {
            f.steps.push(step);
        }
    }

    /// A message at `pos` that is not a continuation line.
    fn message(&mut self, pos: Pos, msg: &str) {
        if let Some(subject) = header_subject(msg) {
            self.pending.push(Block {
                pos,
                subject: subject.to_string(),
                flows: Vec::new(),
            });
            self.current = Some(self.pending.len() - 1);
        } else if let Some(name) = msg.strip_prefix("moved to heap: ") {
            self.heap(pos, name, Subject::Moved(name.to_string()));
        } else if let Some(expr) = msg.strip_suffix(" escapes to heap") {
            if expr == "func literal" {
                self.out.func_literals.push(pos.clone());
            }
            self.heap(pos, expr, Subject::Expr(expr.to_string()));
        } else if let Some(expr) = msg.strip_suffix(" does not escape") {
            if expr == "func literal" {
                self.out.func_literals.push(pos.clone());
            }
            self.out
                .no_escape
                .push((self.package.clone(), pos, expr.to_string()));
        } else if let Some(rest) = msg
            .strip_prefix("cannot inline ")
            .or_else(|| msg.strip_prefix("can inline "))
        {
            let name = inline_name(rest).to_string();
            self.out.funcs.push(FuncDecl {
                package: self.package.clone(),
                name,
                pos,
            });
        }
        // Everything else ("inlining call to", "leaking param", "capturing
        // by", parameter-leak explanation headers) is not needed.
    }

    /// A heap decision about `subject` (printed as `text`), with the
    /// explanation block before it.
    fn heap(&mut self, pos: Pos, text: &str, subject: Subject) {
        let flows = take_block(&mut self.pending, &pos, text);
        self.out.heap.push(HeapDiag {
            package: self.package.clone(),
            pos,
            subject,
            flows,
        });
    }
}

/// Removes and returns the flows of the first pending explanation of
/// `subject` at `pos`.
fn take_block(pending: &mut Vec<Block>, pos: &Pos, subject: &str) -> Vec<Flow> {
    match pending
        .iter()
        .position(|b| b.pos == *pos && b.subject == subject)
    {
        Some(i) => pending.remove(i).flows,
        None => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(file: &str, line: u32, col: u32) -> Pos {
        Pos {
            file: file.into(),
            line,
            col,
        }
    }

    #[test]
    fn positions() {
        assert_eq!(
            split_pos("./main.go:43:2: moved to heap: p"),
            Some((pos("./main.go", 43, 2), "moved to heap: p"))
        );
        assert_eq!(
            split_pos("<autogenerated>:1: inlining call to W.M"),
            Some((pos("<autogenerated>", 1, 0), "inlining call to W.M"))
        );
        assert_eq!(
            split_pos("/a:b/x.go:7:3:   flow: x"),
            Some((pos("/a:b/x.go", 7, 3), "  flow: x"))
        );
        assert_eq!(split_pos("# allocwatch.test/escape"), None);
        assert_eq!(split_pos("note: module requires Go 1.30"), None);
    }

    #[test]
    fn steps() {
        assert_eq!(
            parse_step("&p (address-of) at ./main.go:44:9"),
            Some(Step {
                expr: "&p".into(),
                why: "address-of".into(),
                at: Some(pos("./main.go", 44, 9)),
            })
        );
        assert_eq!(
            parse_step("fmt.Fprintf(&b, \"%s (x)\", ... argument...) (call parameter) at demo/main.go:114:14")
                .map(|s| s.why),
            Some("call parameter".into())
        );
        assert_eq!(
            parse_step("total (captured by a closure) at ./main.go:64:3").map(|s| s.why),
            Some("captured by a closure".into())
        );
    }

    #[test]
    fn inline_names() {
        assert_eq!(inline_name("newPoint: marked go:noinline"), "newPoint");
        assert_eq!(
            inline_name("counter.func1 with cost 5 as: func() int64 { n++; return n }"),
            "counter.func1"
        );
        assert_eq!(
            inline_name("(*store).add: function too complex: cost 200 exceeds budget 80"),
            "(*store).add"
        );
        assert_eq!(
            inline_name("Map[go.shape.struct { a int; b: string }] as: func() {}"),
            "Map[go.shape.struct { a int; b: string }]"
        );
        assert_eq!(inline_name("f"), "f");
    }

    const GO121: &str = "\
# allocwatch.test/escape
./main.go:42:6: cannot inline newPoint: marked go:noinline
./main.go:76:9: can inline counter.func1 with cost 5 as: func() int64 { n++; return n }
./main.go:43:2: p escapes to heap:
./main.go:43:2:   flow: ~r0 = &p:
./main.go:43:2:     from &p (address-of) at ./main.go:44:9
./main.go:43:2:     from return &p (return) at ./main.go:44:2
./main.go:43:2: moved to heap: p
./main.go:59:21: parameter wg leaks to {heap} with derefs=0:
./main.go:59:21:   flow: {heap} = wg:
./main.go:59:21:     from (*sync.WaitGroup).Add(wg, 1) (call parameter) at ./main.go:61:8
./main.go:59:21: leaking param: wg
./main.go:76:9: func literal escapes to heap
./main.go:87:13: make([]byte, n) does not escape
";

    const GO127: &str = "\
# allocwatch.test/escape
./main.go:43:2: p escapes to heap in newPoint:
./main.go:43:2:   flow: ~r0 ← &p:
./main.go:43:2:     from &p (address-of) at ./main.go:44:9
./main.go:43:2:     from return &p (return) at ./main.go:44:2
./main.go:43:2: moved to heap: p
";

    #[test]
    fn both_formats() {
        let a = parse(GO121);
        let b = parse(GO127);
        assert_eq!(a.heap[0], b.heap[0]);
        let h = &a.heap[0];
        assert_eq!(h.package, "allocwatch.test/escape");
        assert_eq!(h.subject, Subject::Moved("p".into()));
        assert_eq!(h.flows.len(), 1);
        assert_eq!(h.flows[0].edge, "~r0 ← &p");
        assert_eq!(h.flows[0].steps.len(), 2);
        assert_eq!(h.flows[0].steps[1].why, "return");
        // The parameter-leak explanation does not attach to anything.
        assert_eq!(a.heap.len(), 2);
        assert_eq!(a.heap[1].subject, Subject::Expr("func literal".into()));
        assert!(a.heap[1].flows.is_empty());
        assert_eq!(a.func_literals, vec![pos("./main.go", 76, 9)]);
        assert_eq!(
            a.no_escape,
            vec![(
                "allocwatch.test/escape".into(),
                pos("./main.go", 87, 13),
                "make([]byte, n)".into()
            )]
        );
        let names: Vec<&str> = a.funcs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["newPoint", "counter.func1"]);
    }

    #[test]
    fn same_expression_twice_pairs_in_order() {
        let text = "\
# p
./x.go:20:12: []int{...} escapes to heap:
./x.go:20:12:   flow: {heap} = &{storage for []int{...}}:
./x.go:20:12:     from is = []int{...} (assign) at ./x.go:20:5
./x.go:20:12: []int{...} escapes to heap:
./x.go:20:12:   flow: {storage for []int{...}} = &{storage for []int{...}}:
./x.go:20:12:     from []int{...} (interface-converted) at ./x.go:20:12
./x.go:20:12: []int{...} escapes to heap
./x.go:20:12: []int{...} escapes to heap
";
        let o = parse(text);
        assert_eq!(o.heap.len(), 2);
        assert_eq!(o.heap[0].flows[0].steps[0].why, "assign");
        assert_eq!(o.heap[1].flows[0].steps[0].why, "interface-converted");
    }

    #[test]
    fn garbage_is_skipped() {
        let o = parse("go: downloading x\n\n:::\n./a.go:1:1:\n./a.go:x: y\n");
        assert_eq!(o, CompilerOutput::default());
    }
}
