//! What a reader of a GitHub comment, issue or plan actually sees, as Markdown: the one
//! sanitiser for untrusted text that reaches an agent (issue titles and bodies, `/countersign
//! run` instructions) or a human's approval (control-mode plans).
//!
//! Built on the same Markdown parser GitHub-flavoured rendering follows (pulldown-cmark,
//! CommonMark with tables, strikethrough and task lists), it keeps the source of every block
//! a reader sees and drops what they do not:
//!
//! - link reference definitions (`[//]: # (a "comment")` is one) — the ones links use come
//!   back at the end as plain `[label]: destination`, the rest are gone;
//! - HTML comments, HTML tags (their visible text stays), `<script>`, `<style>` and elements
//!   marked `hidden` or styled invisible, with their content;
//! - image alt text and link titles (shown only on hover, if at all);
//! - invisible and filler code points: Unicode tag characters, variation selectors,
//!   zero-width and bidirectional controls, soft hyphens, Hangul and other fillers, control
//!   characters — as characters and as HTML entities.
//!
//! Line endings are normalised, runs of blank lines collapsed and the result capped with a
//! visible marker. Pure and IO-free; the bot (issue text) and the controller (plans) call it.

use std::collections::BTreeSet;
use std::ops::Range;

use pulldown_cmark::{Event, LinkType, Options, Parser, Tag};

#[cfg(test)]
mod tests;

/// Longest sanitised title, in bytes.
pub const MAX_TITLE_BYTES: usize = 256;
/// Title used when nothing visible is left.
pub const UNTITLED: &str = "(untitled)";
/// Appended when a body is cut to its size cap.
pub const TRUNCATION_MARKER: &str = "\n\n[… truncated by Countersign]";

/// How many hidden things were removed, for audit logging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemovedCounts {
    /// HTML comments `<!-- … -->`.
    pub html_comments: usize,
    /// Raw HTML tags (their visible inner text is kept).
    pub html_tags: usize,
    /// `<script>`/`<style>` elements and elements marked hidden, removed with their content.
    pub hidden_elements: usize,
    /// Image alt texts and link titles.
    pub image_alts_and_titles: usize,
    /// Link reference definitions (`[label]: …`), used or not; used ones come back plain.
    pub reference_definitions: usize,
    /// Invisible, formatting, filler and control characters (and entities for them).
    pub invisible_chars: usize,
}

impl RemovedCounts {
    fn add(&mut self, other: RemovedCounts) {
        self.html_comments += other.html_comments;
        self.html_tags += other.html_tags;
        self.hidden_elements += other.hidden_elements;
        self.image_alts_and_titles += other.image_alts_and_titles;
        self.reference_definitions += other.reference_definitions;
        self.invisible_chars += other.invisible_chars;
    }
}

/// Sanitised text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitized {
    /// The visible text, at most the requested number of bytes.
    pub text: String,
    /// Whether the text was cut to fit.
    pub truncated: bool,
    /// What was removed.
    pub removed: RemovedCounts,
}

/// Most rounds of sanitising (see [`visible_markdown`]) before text is taken to be built to
/// hide something. Ordinary text takes one round and a second that changes nothing.
const MAX_ROUNDS: usize = 8;
/// What is left of a body whose markup was still changing after [`MAX_ROUNDS`].
pub const NESTED_MARKUP: &str = "[markup nested to hide text was removed by Countersign]";

/// The visible Markdown of `text`, capped at `max_bytes` (on a char boundary, with
/// [`TRUNCATION_MARKER`]).
///
/// Removing markup can make new markup (`<sc<b>ript>`, Markdown inside a raw HTML block
/// becoming Markdown outside one, a code span cut open by the cap), which GitHub would then
/// hide from whoever reads the result: a plan posted for approval must show everything the
/// agent later reads. So the text is sanitised until a round changes nothing (found by the
/// `sanitiser` fuzz target and the properties in `tests/properties.rs`).
pub fn visible_markdown(text: &str, max_bytes: usize) -> Sanitized {
    let mut removed = RemovedCounts::default();
    let mut text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut truncated = false;
    for round in 0..=MAX_ROUNDS {
        if round == MAX_ROUNDS {
            text = cap(NESTED_MARKUP, max_bytes).0;
            truncated = true;
            break;
        }
        let mut counts = RemovedCounts::default();
        let rendered = render(&text, &mut counts);
        let stripped = strip_invisible(&rendered, &mut counts, true);
        let collapsed = collapse_blank_lines(&stripped);
        let (next, cut) = cap(collapsed.trim_matches('\n'), max_bytes);
        if round > 0 {
            // Used reference definitions come back plain after every round.
            counts.reference_definitions = 0;
        }
        removed.add(counts);
        truncated |= cut;
        if next == text {
            break;
        }
        text = next;
    }
    Sanitized {
        text,
        truncated,
        removed,
    }
}

/// An issue title as a reader sees it: one line, visible characters only (HTML comments and
/// tags removed, until removing them makes no new ones), at most [`MAX_TITLE_BYTES`], never
/// empty ([`UNTITLED`] when nothing is left).
pub fn visible_title(text: &str) -> String {
    let mut removed = RemovedCounts::default();
    let mut one_line = text.to_owned();
    for round in 0..=MAX_ROUNDS {
        if round == MAX_ROUNDS {
            return UNTITLED.to_owned();
        }
        let stripped = strip_invisible(
            &one_line.replace(['\r', '\n', '\t'], " "),
            &mut removed,
            false,
        );
        let cleaned = clean_html(&stripped, &mut removed);
        let next = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
        if next == one_line {
            break;
        }
        one_line = next;
    }
    let mut end = one_line.len().min(MAX_TITLE_BYTES);
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    let title = one_line[..end].trim();
    if title.is_empty() {
        UNTITLED.to_owned()
    } else {
        title.to_owned()
    }
}

/// Whether `c` is invisible, a filler or formatting character a reader does not see.
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                      // soft hyphen
        | '\u{034F}'                    // combining grapheme joiner
        | '\u{061C}'                    // Arabic letter mark
        | '\u{115F}' | '\u{1160}'       // Hangul choseong/jungseong fillers
        | '\u{17B4}' | '\u{17B5}'       // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'       // Mongolian variation selectors and vowel separator
        | '\u{200B}'..='\u{200F}'       // zero-width space/joiners, LRM, RLM
        | '\u{202A}'..='\u{202E}'       // bidirectional embeddings and overrides
        | '\u{2060}'..='\u{206F}'       // word joiner, invisible operators, bidi isolates
        | '\u{2800}'                    // Braille blank
        | '\u{3164}'                    // Hangul filler
        | '\u{FE00}'..='\u{FE0F}'       // variation selectors
        | '\u{FEFF}'                    // zero-width no-break space (BOM)
        | '\u{FFA0}'                    // halfwidth Hangul filler
        | '\u{FFF9}'..='\u{FFFB}'       // interlinear annotations
        | '\u{1BCA0}'..='\u{1BCA3}'     // shorthand format controls
        | '\u{1D173}'..='\u{1D17A}'     // musical formatting
        | '\u{E0000}'..='\u{E007F}'     // tag characters
        | '\u{E0100}'..='\u{E01EF}'     // variation selectors supplement
    )
}

/// Removes invisible and control characters (keeping `\n` and, when `keep_newlines`, `\t`)
/// and numeric or named HTML entities that stand for invisible characters.
fn strip_invisible(text: &str, removed: &mut RemovedCounts, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '&'
            && let Some(len) = invisible_entity(rest)
        {
            removed.invisible_chars += 1;
            rest = &rest[len..];
            continue;
        }
        if c == '\n' || (c == '\t' && keep_newlines) {
            out.push(c);
        } else if is_invisible(c) || c.is_control() {
            removed.invisible_chars += 1;
        } else {
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The length of an HTML entity at the start of `s` that renders as an invisible
/// character (`&#8203;`, `&#xE0041;`, `&zwnj;` …).
fn invisible_entity(s: &str) -> Option<usize> {
    let end = s.bytes().take(40).position(|b| b == b';')?;
    let body = &s[1..end];
    let c = if let Some(hex) = body.strip_prefix("#x").or_else(|| body.strip_prefix("#X")) {
        char::from_u32(u32::from_str_radix(hex, 16).ok()?)?
    } else if let Some(dec) = body.strip_prefix('#') {
        char::from_u32(dec.parse().ok()?)?
    } else {
        match body {
            "shy"
            | "zwnj"
            | "zwj"
            | "lrm"
            | "rlm"
            | "ZeroWidthSpace"
            | "NoBreak"
            | "InvisibleTimes"
            | "InvisibleComma"
            | "ApplyFunction"
            | "NegativeVeryThinSpace"
            | "NegativeThinSpace"
            | "NegativeMediumSpace"
            | "NegativeThickSpace" => '\u{200B}',
            _ => return None,
        }
    };
    (is_invisible(c) || (c.is_control() && c != '\n' && c != '\t')).then_some(end + 1)
}

/// One parsed event with its source range.
struct Ev<'a> {
    event: Event<'a>,
    range: Range<usize>,
}

/// A node of the block tree: a block (container or leaf) or an inline run.
enum Node {
    /// A container block (quote, list, item, footnote): its range and children.
    Container {
        range: Range<usize>,
        children: Vec<Node>,
        /// The syntax before the first child is kept as written (a footnote's `[^1]:`).
        labelled: bool,
    },
    /// A leaf block (paragraph, heading, table, rule), events `first..=last`.
    Leaf {
        range: Range<usize>,
        events: Range<usize>,
    },
    /// An indented or fenced code block: kept as written.
    Code { range: Range<usize> },
    /// Raw HTML.
    Html { range: Range<usize> },
    /// Inline events directly inside a container (tight list items), `first..last`.
    Inline {
        range: Range<usize>,
        events: Range<usize>,
    },
}

impl Node {
    fn range(&self) -> Range<usize> {
        match self {
            Self::Container { range, .. }
            | Self::Leaf { range, .. }
            | Self::Code { range }
            | Self::Html { range }
            | Self::Inline { range, .. } => range.clone(),
        }
    }
}

fn parse(text: &str) -> (Vec<Ev<'_>>, Vec<(String, String)>) {
    // What GitHub renders: tables, strikethrough, task lists and footnotes.
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES;
    let iter = Parser::new_ext(text, options).into_offset_iter();
    // pulldown-cmark keeps the definitions in a HashMap: put them back in the order they
    // were written, or the output differs from one call to the next (found by the
    // `sanitiser` fuzz target).
    let mut defs: Vec<(usize, String, String)> = iter
        .reference_definitions()
        .iter()
        .map(|(label, def)| (def.span.start, label.to_owned(), def.dest.to_string()))
        .collect();
    defs.sort_unstable();
    let defs = defs
        .into_iter()
        .map(|(_, label, dest)| (label, dest))
        .collect();
    let events = iter.map(|(event, range)| Ev { event, range }).collect();
    (events, defs)
}

/// The index after the `End` matching the `Start` at `i`.
fn skip_block(events: &[Ev<'_>], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < events.len() {
        match events[j].event {
            Event::Start(_) => depth += 1,
            Event::End(_) => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    events.len()
}

fn is_block_start(tag: &Tag<'_>) -> bool {
    matches!(
        tag,
        Tag::Paragraph
            | Tag::Heading { .. }
            | Tag::BlockQuote(_)
            | Tag::CodeBlock(_)
            | Tag::HtmlBlock
            | Tag::List(_)
            | Tag::Item
            | Tag::FootnoteDefinition(_)
            | Tag::Table(_)
            | Tag::MetadataBlock(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
    )
}

/// The block nodes of `events[from..to]`.
fn build(events: &[Ev<'_>], from: usize, to: usize) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut i = from;
    let mut inline_start: Option<usize> = None;
    let flush = |nodes: &mut Vec<Node>, start: &mut Option<usize>, end: usize| {
        if let Some(s) = start.take() {
            let range = events[s].range.start..events[end - 1].range.end;
            nodes.push(Node::Inline {
                range,
                events: s..end,
            });
        }
    };
    while i < to {
        match &events[i].event {
            Event::Start(tag) if is_block_start(tag) => {
                flush(&mut nodes, &mut inline_start, i);
                let end = skip_block(events, i).min(to);
                let range = events[i].range.clone();
                nodes.push(match tag {
                    Tag::BlockQuote(_)
                    | Tag::List(_)
                    | Tag::Item
                    | Tag::FootnoteDefinition(_)
                    | Tag::DefinitionList
                    | Tag::DefinitionListDefinition => Node::Container {
                        range,
                        children: build(events, i + 1, end.saturating_sub(1)),
                        labelled: matches!(tag, Tag::FootnoteDefinition(_)),
                    },
                    Tag::CodeBlock(_) | Tag::MetadataBlock(_) => Node::Code { range },
                    Tag::HtmlBlock => Node::Html { range },
                    _ => Node::Leaf {
                        range,
                        events: i..end,
                    },
                });
                i = end;
            }
            Event::Rule => {
                flush(&mut nodes, &mut inline_start, i);
                nodes.push(Node::Leaf {
                    range: events[i].range.clone(),
                    events: i..i + 1,
                });
                i += 1;
            }
            Event::End(_) if inline_start.is_none() => i += 1,
            Event::Start(_) => {
                // An inline container (emphasis, link …) with everything inside it.
                inline_start.get_or_insert(i);
                i = skip_block(events, i).min(to);
            }
            _ => {
                inline_start.get_or_insert(i);
                i += 1;
            }
        }
    }
    flush(&mut nodes, &mut inline_start, to);
    nodes
}

/// Renders the visible Markdown of `text`.
fn render(text: &str, removed: &mut RemovedCounts) -> String {
    let (events, defs) = parse(text);
    removed.reference_definitions += defs.len();
    let nodes = build(&events, 0, events.len());
    let mut used = BTreeSet::new();
    let mut out = String::with_capacity(text.len());
    for node in &nodes {
        // Top-level blocks are separated by one blank line, whatever stood between them
        // (a reference definition, say) in the source.
        let trimmed = out.trim_end_matches([' ', '\n']).len();
        out.truncate(trimmed);
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        if let Node::Code { range } = node {
            // An indented code block's range starts after its indentation.
            let line_start = text[..range.start].rfind('\n').map_or(0, |i| i + 1);
            let indent = &text[line_start..range.start];
            if indent.chars().all(|c| c == ' ' || c == '\t') {
                out.push_str(indent);
            }
        }
        render_node(text, &events, node, &mut out, &mut used, removed);
    }
    // Reference links keep working: their definitions come back, plain and title-less.
    let used_defs: Vec<&(String, String)> = defs
        .iter()
        .filter(|(label, _)| used.contains(&label.to_lowercase()))
        .collect();
    if !used_defs.is_empty() {
        out.push_str("\n\n");
        for (label, dest) in used_defs {
            out.push_str(&format!("[{label}]: <{}>\n", dest.replace(['<', '>'], "")));
        }
    }
    out
}

fn render_node(
    text: &str,
    events: &[Ev<'_>],
    node: &Node,
    out: &mut String,
    used: &mut BTreeSet<String>,
    removed: &mut RemovedCounts,
) {
    match node {
        Node::Code { range } => out.push_str(&text[range.clone()]),
        Node::Html { range } => out.push_str(&clean_html(&text[range.clone()], removed)),
        Node::Leaf { range, events: evs } | Node::Inline { range, events: evs } => {
            out.push_str(&render_inline(
                text,
                events,
                range.clone(),
                evs.clone(),
                used,
                removed,
            ));
        }
        Node::Container {
            range,
            children,
            labelled,
        } => {
            let mut at = range.start;
            for (i, child) in children.iter().enumerate() {
                let r = child.range();
                if r.start >= at {
                    let gap = &text[at..r.start];
                    if i == 0 && *labelled {
                        out.push_str(gap);
                    } else {
                        out.push_str(&markers_only(gap));
                    }
                }
                render_node(text, events, child, out, used, removed);
                at = r.end.max(at);
            }
            if at < range.end {
                out.push_str(&markers_only(&text[at..range.end]));
            }
        }
    }
}

/// The parts of a gap between blocks inside a container that are container syntax (quote
/// markers, list markers, indentation, line breaks); anything else there (a reference
/// definition) is dropped.
fn markers_only(gap: &str) -> String {
    let mut out = String::new();
    for (i, line) in gap.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut kept = 0;
        let bytes = line.as_bytes();
        while kept < bytes.len() {
            let b = bytes[kept];
            if matches!(b, b' ' | b'\t' | b'>' | b'-' | b'*' | b'+') {
                kept += 1;
            } else if b.is_ascii_digit() {
                let digits = bytes[kept..]
                    .iter()
                    .take_while(|d| d.is_ascii_digit())
                    .count();
                match bytes.get(kept + digits) {
                    Some(b'.' | b')') => kept += digits + 1,
                    _ => break,
                }
            } else if b == b'[' && bytes.get(kept + 2) == Some(&b']') && bytes[kept + 1].is_ascii()
            {
                // A task-list checkbox `[ ]` / `[x]`.
                kept += 3;
            } else {
                break;
            }
        }
        out.push_str(&line[..kept]);
    }
    out
}

/// The source of `range` with the hidden inline parts of `events[evs]` cut out.
fn render_inline(
    text: &str,
    events: &[Ev<'_>],
    range: Range<usize>,
    evs: Range<usize>,
    used: &mut BTreeSet<String>,
    removed: &mut RemovedCounts,
) -> String {
    // (range to replace, replacement)
    let mut edits: Vec<(Range<usize>, String)> = Vec::new();
    let mut i = evs.start;
    while i < evs.end {
        let Ev { event, range: r } = &events[i];
        match event {
            Event::InlineHtml(html) | Event::Html(html) => {
                let html: &str = html;
                if html.starts_with("<!--") {
                    removed.html_comments += 1;
                    edits.push((r.clone(), String::new()));
                } else if let Some((name, len, closing)) = html_tag(html) {
                    removed.html_tags += 1;
                    let tag = &html[..len];
                    let hides = hides_element(&name, tag);
                    if !closing && hides && !tag.ends_with("/>") {
                        removed.hidden_elements += 1;
                        let end = matching_close(events, i, evs.end, &name)
                            .map_or(range.end, |j| events[j].range.end);
                        edits.push((r.start..end, String::new()));
                    } else {
                        edits.push((r.clone(), String::new()));
                    }
                } else {
                    edits.push((r.clone(), String::new()));
                }
            }
            Event::Start(Tag::Image {
                dest_url, title, ..
            }) => {
                let end = skip_block(events, i);
                let had_alt = events[i + 1..end.saturating_sub(1)]
                    .iter()
                    .any(|e| matches!(&e.event, Event::Text(t) if !t.trim().is_empty()));
                if had_alt || !title.is_empty() {
                    removed.image_alts_and_titles += 1;
                }
                edits.push((r.clone(), format!("![]({})", link_dest(dest_url))));
                i = end;
                continue;
            }
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }) => match link_type {
                LinkType::Reference | LinkType::Collapsed | LinkType::Shortcut => {
                    used.insert(id.to_lowercase());
                }
                LinkType::Inline if !title.is_empty() => {
                    removed.image_alts_and_titles += 1;
                    let end = skip_block(events, i);
                    let inner_end = events[i + 1..end.saturating_sub(1)]
                        .iter()
                        .map(|e| e.range.end)
                        .max()
                        .unwrap_or(r.start + 1);
                    if let Some(at) = text[inner_end..r.end].find("](") {
                        let from = inner_end + at;
                        edits.push((from..r.end, format!("]({})", link_dest(dest_url))));
                    }
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    edits.sort_by_key(|(r, _)| (r.start, std::cmp::Reverse(r.end)));
    let mut out = String::with_capacity(range.len());
    let mut at = range.start;
    for (r, replacement) in edits {
        if r.start < at {
            continue; // inside an earlier edit
        }
        out.push_str(&text[at..r.start.min(range.end)]);
        out.push_str(&replacement);
        at = r.end.min(range.end).max(at);
    }
    if at < range.end {
        out.push_str(&text[at..range.end]);
    }
    out
}

/// A link destination as written back: `<…>` when it contains spaces or parentheses.
fn link_dest(dest: &str) -> String {
    if dest.contains([' ', '(', ')']) {
        format!("<{}>", dest.replace(['<', '>'], ""))
    } else {
        dest.to_owned()
    }
}

/// The event index of the tag closing the element opened at `open` (same name, nesting
/// counted), within `..end`.
fn matching_close(events: &[Ev<'_>], open: usize, end: usize, name: &str) -> Option<usize> {
    let mut depth = 1usize;
    for (j, ev) in events.iter().enumerate().take(end).skip(open + 1) {
        let (Event::InlineHtml(html) | Event::Html(html)) = &ev.event else {
            continue;
        };
        if let Some((n, len, closing)) = html_tag(html)
            && n == name
        {
            if closing {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            } else if !html[..len].ends_with("/>") {
                depth += 1;
            }
        }
    }
    None
}

/// Whether an element hides its content from readers: `<script>`, `<style>`, `<template>`,
/// or an opening tag with a `hidden` attribute or an inline style with `display:none` /
/// `visibility:hidden`. Removing such an element's text errs on the side of giving the
/// agent less than a reader might see.
fn hides_element(name: &str, tag: &str) -> bool {
    if matches!(name, "script" | "style" | "template" | "noscript") {
        return true;
    }
    let lower = tag.to_ascii_lowercase();
    let compact: String = lower.chars().filter(|c| !c.is_whitespace()).collect();
    let hidden_attribute = lower
        .trim_start_matches('<')
        .trim_end_matches(['>', '/'])
        .split([' ', '\t', '\n'])
        .skip(1)
        .any(|attr| attr == "hidden" || attr.starts_with("hidden="));
    hidden_attribute || compact.contains("display:none") || compact.contains("visibility:hidden")
}

/// Parses an HTML tag at the start of `s`: (lower-case name, byte length, is closing tag).
fn html_tag(s: &str) -> Option<(String, usize, bool)> {
    let body = s.strip_prefix('<')?;
    let (closing, body) = match body.strip_prefix('/') {
        Some(b) => (true, b),
        None => (false, body),
    };
    let name: String = body
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let after = &body[name.len()..];
    if !after.starts_with(['>', ' ', '\t', '\n', '/']) {
        return None;
    }
    let end = after.find('>')?;
    let len = s.len() - after.len() + end + 1;
    Some((name.to_ascii_lowercase(), len, closing))
}

/// Raw HTML (an HTML block, or a title) with comments, tags and hidden elements removed and
/// the visible text kept.
fn clean_html(text: &str, removed: &mut RemovedCounts) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('<') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("<!--") {
            removed.html_comments += 1;
            rest = after.find("-->").map_or("", |j| &after[j + 3..]);
            continue;
        }
        match html_tag(tail) {
            Some((name, len, closing)) => {
                removed.html_tags += 1;
                rest = &tail[len..];
                if !closing && hides_element(&name, &tail[..len]) && !tail[..len].ends_with("/>") {
                    removed.hidden_elements += 1;
                    let lower = rest.to_ascii_lowercase();
                    let close = format!("</{name}");
                    rest = match lower.find(&close) {
                        Some(j) => {
                            let after = &rest[j..];
                            after.find('>').map_or("", |k| &after[k + 1..])
                        }
                        None => "",
                    };
                }
            }
            None => {
                out.push('<');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Collapses runs of more than two blank lines into two, and lines of only spaces into
/// empty ones.
fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.split_inclusive('\n') {
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run > 2 {
                continue;
            }
            out.push('\n');
        } else {
            blank_run = 0;
            out.push_str(line);
        }
    }
    out
}

/// Cuts `text` to `max_bytes` on a char boundary with [`TRUNCATION_MARKER`] when it fits.
fn cap(text: &str, max_bytes: usize) -> (String, bool) {
    if text.len() <= max_bytes {
        return (text.to_owned(), false);
    }
    let (budget, marker) = if TRUNCATION_MARKER.len() <= max_bytes {
        (max_bytes - TRUNCATION_MARKER.len(), TRUNCATION_MARKER)
    } else {
        (max_bytes, "")
    };
    let mut end = budget;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (format!("{}{marker}", &text[..end]), true)
}
