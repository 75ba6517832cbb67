//! Import graph of the crate's own sources (`src/**/*.rs`): no cycles, no file over
//! [`MAX_LINES`] lines, no use of the crate root's re-exports inside the crate, and every
//! reference going down the [`LAYERS`] table. Run with `--nocapture` for a summary; set
//! `PARTYROOM_IMPORT_GRAPH=graph.dot` to also get the graph in Graphviz format.
//!
//! The graph has one node per file. Each file is a module: `lib.rs` is the crate root,
//! `a/mod.rs` and `a.rs` are `a`, `a/b.rs` is `a::b`. A line `mod name {` opens an inline module
//! `M::name` that lasts to the end of the file (in this crate inline modules are only the
//! `#[cfg(test)] mod tests` at the end of a file), so its `use super::*;` names the file itself.
//!
//! What counts as an edge: a path in code (comments and the contents of string and char
//! literals are blanked out first) that starts with `crate::`, `self::` or `super::` (repeated
//! as often as written), or whose first segment is a child module of the current module
//! (`use persist::Persistence;` or `held_reads::HeldReads::default()` in `actor/mod.rs`).
//! `use` trees are expanded (`use crate::{a::X, b::{Y, Z}};`, over several lines, `pub use` and
//! `pub(crate) use` alike). A path resolves to the deepest module with a file that its segments
//! name: `crate::protocol::CloseFrame` is `protocol/mod.rs` (or `protocol.rs`), `crate::Refusal`
//! is `lib.rs`. References of a file to itself are not edges, and neither are `mod x;`
//! declarations (containment, not import).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Top-level modules (first segment of a module path), from the bottom layer to the top. A file
/// may reference its own top-level module and modules of strictly lower layers; the crate root
/// is above everything. Modules listed here that do not exist (yet) are fine.
const LAYERS: &[&[&str]] = &[
    &["clock", "config", "metrics", "pattern", "storage"],
    &["protocol"],
    &["connection"],
    &["session"],
    &["mailbox"],
    &["handlers"],
    &["room"],
    &["actor"],
    &["registry"],
    &["testing"],
];

/// Longest a source file may be.
const MAX_LINES: usize = 600;

/// A module path (`["actor", "persist"]`); empty for the crate root.
type Segs = Vec<String>;

/// One `.rs` file under `src/`: its path relative to `src/`, its module and its text.
struct SrcFile {
    rel: String,
    module: Segs,
    text: String,
}

/// A reference of line `line` (1-based) of file `from` to file `to` (indices in `files`).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: usize,
    line: usize,
    to: usize,
}

struct Graph {
    files: Vec<SrcFile>,
    /// Every reference found, in file and line order.
    edges: BTreeSet<Edge>,
    /// The distinct file-to-file edges, each with the first line that makes it.
    links: BTreeMap<(usize, usize), usize>,
}

/// Module path of a file from its path relative to `src/`.
fn module_path(rel: &str) -> Segs {
    let mut segs: Segs = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if segs == ["lib"] || segs.last().is_some_and(|s| s == "mod") {
        segs.pop();
    }
    segs
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn is_ident(s: &str) -> bool {
    s.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// `src` with comments and string/char literals (`".."`, `r#".."#`, `b".."`, `'x'`, `'\n'`)
/// replaced by spaces. Newlines are kept, so line numbers stay right; lifetimes stay as they are.
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let at = |k: usize| c.get(k).copied();
    let find = |from: usize, end: &dyn Fn(usize) -> bool| (from..c.len()).find(|&k| end(k));
    let (mut out, mut i) = (String::with_capacity(src.len()), 0);
    while i < c.len() {
        let word_start = |k: usize| k == 0 || !is_ident_char(c[k - 1]);
        let end = match (c[i], at(i + 1)) {
            ('/', Some('/')) => Some(find(i, &|k| c[k] == '\n').unwrap_or(c.len())),
            ('/', Some('*')) => {
                let (mut depth, mut k) = (0, i);
                loop {
                    match (at(k), at(k + 1)) {
                        (Some('/'), Some('*')) => (depth, k) = (depth + 1, k + 2),
                        (Some('*'), Some('/')) if depth == 1 => break Some(k + 2),
                        (Some('*'), Some('/')) => (depth, k) = (depth - 1, k + 2),
                        (Some(_), _) => k += 1,
                        (None, _) => break Some(k),
                    }
                }
            }
            ('"', _) => {
                let mut k = i + 1;
                while k < c.len() && c[k] != '"' {
                    k += if c[k] == '\\' { 2 } else { 1 };
                }
                Some(c.len().min(k + 1))
            }
            // Raw strings (`r`, `br` or `cr`, then n `#`) end at a quote followed by n `#`.
            ('r', _) if word_start(i) || matches!(c[i - 1], 'b' | 'c') && word_start(i - 1) => {
                let n = (i + 1..c.len()).take_while(|&k| c[k] == '#').count();
                let closes = |k: usize| c[k] == '"' && (1..=n).all(|h| at(k + h) == Some('#'));
                (at(i + 1 + n) == Some('"'))
                    .then(|| find(i + 2 + n, &closes).map_or(c.len(), |k| k + 1 + n))
            }
            ('\'', Some('\\')) => Some(find(i + 3, &|k| c[k] == '\'').map_or(c.len(), |k| k + 1)),
            ('\'', _) if at(i + 2) == Some('\'') => Some(i + 3),
            _ => None,
        };
        if let Some(end) = end {
            out.extend(
                c[i..end]
                    .iter()
                    .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
            );
            i = end;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Tokens of blanked code with their lines: identifiers, `::` and single other characters.
fn tokens(code: &str) -> Vec<(&str, usize)> {
    let (mut out, mut line, mut chars) = (Vec::new(), 1, code.char_indices().peekable());
    while let Some((start, c)) = chars.next() {
        let mut end = start + c.len_utf8();
        line += usize::from(c == '\n');
        if c.is_whitespace() {
            continue;
        }
        if is_ident_char(c) {
            while let Some((k, d)) = chars.next_if(|&(_, d)| is_ident_char(d)) {
                end = k + d.len_utf8();
            }
        } else if c == ':' && chars.next_if(|&(_, d)| d == ':').is_some() {
            end += 1;
        }
        out.push((&code[start..end], line));
    }
    out
}

/// Expands the `use` tree starting at token `*i` into full paths, each with the line of its
/// last segment: `a::{b, c::{self, D as E}, *}` gives `a::b`, `a::c`, `a::c::D`, `a`. A
/// leading `::` (another crate) is kept as a segment `::`, which never resolves.
fn use_tree(t: &[(&str, usize)], i: &mut usize, mut prefix: Segs, out: &mut Vec<(Segs, usize)>) {
    let text = |k: usize| t.get(k).map_or("", |t| t.0);
    if text(*i) == "::" {
        prefix.push("::".into());
        *i += 1;
    }
    while let Some(&(tok, line)) = t.get(*i) {
        *i += 1;
        match tok {
            "{" => {
                while !matches!(text(*i), "}" | "") {
                    let start = *i;
                    use_tree(t, i, prefix.clone(), out);
                    match text(*i) {
                        "," => *i += 1,
                        _ if *i == start => break,
                        _ => {}
                    }
                }
                *i += 1;
                return;
            }
            "*" => return out.push((prefix, line)),
            _ if is_ident(tok) => {
                if tok != "self" || prefix.is_empty() {
                    prefix.push(tok.into());
                }
                if text(*i) == "::" {
                    *i += 1;
                    continue;
                }
                *i += if text(*i) == "as" { 2 } else { 0 };
                return out.push((prefix, line));
            }
            _ => return *i -= 1,
        }
    }
}

/// `path`, written in module `scope`, made absolute (from the crate root); `None` if it does not
/// start with `crate`, `self`, `super` or a child module of `scope` (another crate, a type...).
fn absolute(
    scope: &[String],
    path: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Option<Segs> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some([scope, rest].concat()),
        "super" => {
            let up = 1 + rest.iter().take_while(|s| *s == "super").count();
            Some([&scope[..scope.len().checked_sub(up)?], &rest[up - 1..]].concat())
        }
        _ if is_module(&[scope, &path[..1]].concat()) => Some([scope, path].concat()),
        _ => None,
    }
}

/// The absolute paths that blanked `code` of module `module` references, with their lines.
/// `is_module` says whether a module path has a file (or a directory) under `src/`.
fn scan(
    code: &str,
    module: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Vec<(Segs, usize)> {
    let t = tokens(code);
    let text = |k: usize| t.get(k).map_or("", |t| t.0);
    let (mut scope, mut found, mut i) = (module.to_vec(), Vec::new(), 0);
    while i < t.len() {
        let mut paths = Vec::new();
        if text(i) == "mod" && is_ident(text(i + 1)) && text(i + 2) == "{" {
            scope = [module, &[text(i + 1).to_string()]].concat();
        } else if text(i) == "use" {
            i += 1;
            use_tree(&t, &mut i, Vec::new(), &mut paths);
            while !matches!(text(i), ";" | "") {
                i += 1;
            }
        } else if is_ident(text(i)) && text(i + 1) == "::" && (i == 0 || text(i - 1) != "::") {
            let mut path = vec![text(i).to_string()];
            while text(i + 1) == "::" && is_ident(text(i + 2)) {
                path.push(text(i + 2).to_string());
                i += 2;
            }
            paths.push((path, t[i].1));
        }
        let absolute = |(p, line): (Segs, usize)| Some((absolute(&scope, &p, is_module)?, line));
        found.extend(paths.into_iter().filter_map(absolute));
        i += 1;
    }
    found
}

/// The file of the deepest module with a file that absolute `path` names. `modules` maps module
/// paths to their file (`None` for a directory without one); items and inline modules are not
/// in it and stop the walk, so `crate::a::tests::X` resolves to the file of `a`.
fn resolve(modules: &BTreeMap<Segs, Option<usize>>, path: &[String]) -> Option<usize> {
    let mut target = modules.get(&[][..]).copied().flatten();
    for n in 1..=path.len() {
        match modules.get(&path[..n]) {
            Some(file) => target = file.or(target),
            None => break,
        }
    }
    target
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for path in entries.map(|e| e.expect("directory entry").path()) {
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Reads `src/` and builds the graph. Fails on implausibly few edges, so that a parser that
/// stopped seeing references cannot make the checks pass.
fn load(src: &Path) -> Graph {
    let mut paths = Vec::new();
    walk(src, &mut paths);
    paths.sort();
    let read =
        |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let files: Vec<SrcFile> = paths
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            SrcFile {
                module: module_path(&rel),
                rel,
                text: read(p),
            }
        })
        .collect();
    let mut modules = BTreeMap::new();
    for (idx, f) in files.iter().enumerate() {
        modules.insert(f.module.clone(), Some(idx));
        for n in 0..f.module.len() {
            modules.entry(f.module[..n].to_vec()).or_insert(None);
        }
    }
    let (mut edges, mut links) = (BTreeSet::new(), BTreeMap::new());
    for (from, f) in files.iter().enumerate() {
        for (path, line) in scan(&blank(&f.text), &f.module, &|m| modules.contains_key(m)) {
            if let Some(to) = resolve(&modules, &path).filter(|&to| to != from) {
                edges.insert(Edge { from, line, to });
                links.entry((from, to)).or_insert(line);
            }
        }
    }
    assert!(
        files.len() > 3,
        "only {} files in {}",
        files.len(),
        src.display()
    );
    assert!(
        links.len() > 10,
        "only {} edges: parser broken?",
        links.len()
    );
    Graph {
        files,
        edges,
        links,
    }
}

impl Graph {
    /// Top-level module of a file; empty for the crate root.
    fn top(&self, file: usize) -> &str {
        self.files[file].module.first().map_or("", String::as_str)
    }

    fn tops(&self) -> BTreeSet<&str> {
        (0..self.files.len())
            .map(|f| self.top(f))
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// `file:line: source line`, for failure messages.
    fn cite(&self, file: usize, line: usize) -> String {
        let f = &self.files[file];
        format!(
            "{}:{line}: {}",
            f.rel,
            f.text.lines().nth(line - 1).unwrap_or("").trim()
        )
    }

    /// Graphviz DOT: one node per file, one cluster per top-level module.
    fn dot(&self) -> String {
        let mut out =
            String::from("digraph partyroom_room {\n  rankdir=BT;\n  node [shape=box];\n");
        let mut clusters: BTreeMap<&str, String> = BTreeMap::new();
        for (i, f) in self.files.iter().enumerate() {
            write!(clusters.entry(self.top(i)).or_default(), " \"{}\";", f.rel).unwrap();
        }
        for (top, nodes) in clusters {
            match top {
                "" => writeln!(out, " {nodes}"),
                _ => writeln!(
                    out,
                    "  subgraph \"cluster_{top}\" {{ label=\"{top}\";{nodes} }}"
                ),
            }
            .unwrap();
        }
        for &(from, to) in self.links.keys() {
            let (from, to) = (&self.files[from].rel, &self.files[to].rel);
            writeln!(out, "  \"{from}\" -> \"{to}\";").unwrap();
        }
        out + "}\n"
    }
}

fn crate_graph() -> Graph {
    load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn layer(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// Strongly connected components (Kosaraju), each sorted.
fn sccs(adj: &[Vec<usize>]) -> Vec<Vec<usize>> {
    fn dfs(adj: &[Vec<usize>], v: usize, seen: &mut [bool], out: &mut Vec<usize>) {
        if !std::mem::replace(&mut seen[v], true) {
            adj[v].iter().for_each(|&w| dfs(adj, w, seen, out));
            out.push(v);
        }
    }
    let (n, mut order) = (adj.len(), Vec::new());
    let mut seen = vec![false; n];
    (0..n).for_each(|v| dfs(adj, v, &mut seen, &mut order));
    let mut rev = vec![Vec::new(); n];
    (0..n).for_each(|v| adj[v].iter().for_each(|&w| rev[w].push(v)));
    let mut seen = vec![false; n];
    let component = |v: &usize| {
        let mut scc = Vec::new();
        dfs(&rev, *v, &mut seen, &mut scc);
        scc.sort_unstable();
        Some(scc).filter(|c| !c.is_empty())
    };
    order.iter().rev().filter_map(component).collect()
}

/// A shortest cycle inside `scc` through `start`, as a list of files (first = last).
fn cycle(scc: &[usize], adj: &[Vec<usize>], start: usize) -> Vec<usize> {
    let (mut prev, mut queue) = (vec![None; adj.len()], VecDeque::from([start]));
    while let Some(v) = queue.pop_front() {
        for &w in adj[v].iter().filter(|w| scc.contains(w)) {
            if w == start {
                let mut path = vec![start, v];
                while path[path.len() - 1] != start {
                    path.push(prev[path[path.len() - 1]].unwrap());
                }
                path.reverse();
                return path;
            } else if prev[w].is_none() {
                prev[w] = Some(v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component has a cycle through each file")
}

#[test]
fn import_graph_summary() {
    let g = crate_graph();
    let (files, edges) = (g.files.len(), g.links.len());
    println!("import graph of src/: {files} files, {edges} edges between files");
    println!("  lib.rs: crate root, above all layers");
    for top in g.tops() {
        let layer = layer(top).map_or("NOT IN LAYERS".into(), |l| format!("layer {l}"));
        println!("  {top}: {layer}");
    }
    if let Some(path) = std::env::var_os("PARTYROOM_IMPORT_GRAPH") {
        std::fs::write(&path, g.dot()).expect("writing PARTYROOM_IMPORT_GRAPH");
        println!("  graph written to {}", Path::new(&path).display());
    }
}

/// Edges into `lib.rs` are left out here: each would close a cycle through the root's
/// re-exports, and `no_use_of_crate_root_reexports` reports them.
#[test]
fn no_import_cycles() {
    let g = crate_graph();
    let mut adj = vec![Vec::new(); g.files.len()];
    for &(from, to) in g
        .links
        .keys()
        .filter(|&&(_, to)| !g.files[to].module.is_empty())
    {
        adj[from].push(to);
    }
    let mut report = String::new();
    for scc in sccs(&adj).into_iter().filter(|c| c.len() > 1) {
        let names: Vec<&str> = scc.iter().map(|&f| g.files[f].rel.as_str()).collect();
        writeln!(
            report,
            "\n{} files: {}\n  for example:",
            scc.len(),
            names.join(", ")
        )
        .unwrap();
        // Of the shortest cycles through each file, show the one crossing the most top-level
        // modules: a cycle inside one module is rarely the one to break first.
        let crossed = |c: &Vec<usize>| c.iter().map(|&f| g.top(f)).collect::<BTreeSet<_>>().len();
        let cycles = scc.iter().map(|&start| cycle(&scc, &adj, start));
        let example = cycles.rev().max_by_key(crossed).unwrap();
        for hop in example.windows(2) {
            let cite = g.cite(hop[0], g.links[&(hop[0], hop[1])]);
            let to = &g.files[hop[1]].rel;
            writeln!(report, "    {cite}\n      -> {to}").unwrap();
        }
    }
    assert!(
        report.is_empty(),
        "import cycles in src/ (move what both sides need down):{report}"
    );
}

#[test]
fn no_file_over_max_lines() {
    let g = crate_graph();
    let lines = |f: &SrcFile| f.text.lines().count();
    let long: Vec<String> = g
        .files
        .iter()
        .filter(|f| lines(f) > MAX_LINES)
        .map(|f| format!("  {}: {} lines", f.rel, lines(f)))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them):\n{}",
        long.join("\n")
    );
}

#[test]
fn no_use_of_crate_root_reexports() {
    let g = crate_graph();
    let bad: Vec<String> = g
        .edges
        .iter()
        .filter(|e| g.files[e.to].module.is_empty())
        .map(|e| format!("  {}", g.cite(e.from, e.line)))
        .collect();
    assert!(
        bad.is_empty(),
        "references to the crate root's re-exports; name items by their module \
         (`crate::protocol::CloseFrame`, not `crate::CloseFrame`):\n{}",
        bad.join("\n")
    );
}

/// Edges into `lib.rs` and from or to modules missing from [`LAYERS`] are reported elsewhere.
#[test]
fn modules_respect_layers() {
    let g = crate_graph();
    let mut report = String::new();
    let unlisted: Vec<&str> = g
        .tops()
        .into_iter()
        .filter(|t| layer(t).is_none())
        .collect();
    if !unlisted.is_empty() {
        write!(
            report,
            "\ntop-level modules missing from LAYERS: {}",
            unlisted.join(", ")
        )
        .unwrap();
    }
    for e in &g.edges {
        let (from, to) = (g.top(e.from), g.top(e.to));
        if let (Some(lf), Some(lt)) = (layer(from), layer(to))
            && from != to
            && lt >= lf
        {
            let why = if lt == lf {
                "same layer"
            } else {
                "higher layer"
            };
            let cite = g.cite(e.from, e.line);
            write!(
                report,
                "\n  {from} (layer {lf}) -> {to} (layer {lt}, {why}): {cite}"
            )
            .unwrap();
        }
    }
    assert!(
        report.is_empty(),
        "layering (use only your own module and lower layers):{report}"
    );
}

/// `"a::b"` as module segments; `""` is the crate root.
fn segs(path: &str) -> Segs {
    path.split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The paths `scan` finds in `code` of module `module`, given the modules that have files.
fn paths(code: &str, module: &str, modules: &[&str]) -> Vec<(String, usize)> {
    let is_module = |m: &[String]| modules.contains(&m.join("::").as_str());
    let found = scan(&blank(code), &segs(module), &is_module);
    found
        .into_iter()
        .map(|(p, line)| (p.join("::"), line))
        .collect()
}

fn owned(want: &[(&str, usize)]) -> Vec<(String, usize)> {
    want.iter().map(|&(p, l)| (p.to_string(), l)).collect()
}

#[test]
fn parser_expands_grouped_multiline_use() {
    let code = "pub(crate) use crate::{\n    a::X,\n    b::{self, Y, Z as W},\n};\nuse std::fmt;";
    let want = [("a::X", 2), ("b", 3), ("b::Y", 3), ("b::Z", 3)];
    assert_eq!(paths(code, "m", &[]), owned(&want));
}

#[test]
fn parser_resolves_super_self_and_child_modules() {
    let code =
        "use super::RoomActor;\nfn f(r: &crate::conn::ReadHold) { super::super::X; self::g() }";
    let want = [
        ("actor::RoomActor", 1),
        ("conn::ReadHold", 2),
        ("X", 2),
        ("actor::held_reads::g", 2),
    ];
    assert_eq!(paths(code, "actor::held_reads", &[]), owned(&want));
    let code = "pub(crate) use persist::Persistence;\nuse serde::Deserialize;\n\
                let h = held_reads::Held::new();\n#[cfg(test)]\nmod tests {\n    use super::*;\n}";
    let want = [
        ("actor::persist::Persistence", 1),
        ("actor::held_reads::Held::new", 3),
        ("actor", 6),
    ];
    assert_eq!(
        paths(code, "actor", &["actor::persist", "actor::held_reads"]),
        owned(&want)
    );

    let modules = BTreeMap::from(
        [("", 0), ("actor", 1), ("actor::held_reads", 2)].map(|(m, f)| (segs(m), Some(f))),
    );
    assert_eq!(resolve(&modules, &segs("actor::RoomActor")), Some(1));
    assert_eq!(
        resolve(&modules, &segs("actor::held_reads::tests::x")),
        Some(2)
    );
    assert_eq!(resolve(&modules, &segs("Refusal")), Some(0));
    assert_eq!(module_path("actor/mod.rs"), ["actor"]);
    assert_eq!(module_path("actor/persist.rs"), ["actor", "persist"]);
    assert!(module_path("lib.rs").is_empty());
}

#[test]
fn parser_ignores_comments_and_literals() {
    let code = "// use crate::a;\nlet s = \"crate::b \\\" crate::c\"; let r = br#\"use crate::d;\"#;\n\
                /* crate::e /* nested */ crate::f */ let c = '\"'; let q = '\\'';\n\
                fn g<'a>(x: &'a str) -> &'a str { \"multi\n line crate::g\" }\n/// [`crate::h`]\n\
                use crate::kept;";
    assert_eq!(paths(code, "", &[]), owned(&[("kept", 7)]));
}
