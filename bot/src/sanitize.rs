//! Sanitising untrusted issue and comment text before it becomes an agent's task: removes what a
//! human reviewer does not see on GitHub but a model would read (HTML comments, raw HTML tags and
//! hidden attributes, image alt text, link titles, invisible Unicode), normalises line endings and
//! caps the size. Pure and IO-free.

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
    /// Invisible, formatting and control characters.
    pub invisible_chars: usize,
}

/// A sanitised body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sanitized {
    /// The visible text, at most the requested number of bytes.
    pub text: String,
    /// Whether the text was cut to fit.
    pub truncated: bool,
    /// What was removed.
    pub removed: RemovedCounts,
}

/// Sanitises a Markdown body and caps it at `max_bytes` (on a char boundary, with a marker).
pub fn sanitize_body(text: &str, max_bytes: usize) -> Sanitized {
    let mut removed = RemovedCounts::default();
    let text = strip_chars(text, &mut removed, true);
    let mut out = String::with_capacity(text.len());
    let mut prose = String::new();
    let mut fence: Option<(char, usize)> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        match fence {
            Some((ch, len)) => {
                out.push_str(line);
                let run = trimmed.chars().take_while(|&c| c == ch).count();
                if indent < 4 && run >= len && trimmed[run * ch.len_utf8()..].trim().is_empty() {
                    fence = None;
                }
            }
            None => {
                let ch = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
                let run = ch.map_or(0, |ch| trimmed.chars().take_while(|&c| c == ch).count());
                if let Some(ch) = ch.filter(|_| indent < 4 && run >= 3) {
                    out.push_str(&clean_prose(&prose, &mut removed));
                    prose.clear();
                    out.push_str(line);
                    fence = Some((ch, run));
                } else {
                    prose.push_str(line);
                }
            }
        }
    }
    out.push_str(&clean_prose(&prose, &mut removed));
    let out = collapse_blank_lines(&out);
    let (text, truncated) = cap(out.trim_matches('\n'), max_bytes);
    Sanitized {
        text,
        truncated,
        removed,
    }
}

/// Sanitises an issue title: one line, visible characters only, at most [`MAX_TITLE_BYTES`],
/// never empty ([`UNTITLED`] when nothing is left).
pub fn sanitize_title(text: &str) -> String {
    let mut removed = RemovedCounts::default();
    let text = strip_chars(text, &mut removed, false);
    let text = clean_prose(&text, &mut removed);
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
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

/// Whether `c` is invisible or formatting Unicode a reviewer would not see.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}'
        | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{E0000}'..='\u{E007F}'
        | '\u{180E}' | '\u{034F}')
}

/// Normalises line endings and removes invisible and control characters (keeping `\n`, `\t`).
fn strip_chars(text: &str, removed: &mut RemovedCounts, keep_newlines: bool) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\n' || c == '\t' {
            out.push(if keep_newlines { c } else { ' ' });
        } else if is_invisible(c) || c.is_control() {
            removed.invisible_chars += 1;
        } else {
            out.push(c);
        }
    }
    out
}

/// Removes HTML comments, tags, script/style elements, image alt text and link titles from text
/// outside fenced code.
fn clean_prose(text: &str, removed: &mut RemovedCounts) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['<', '!', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("<!--") {
            removed.html_comments += 1;
            rest = after.find("-->").map_or("", |j| &after[j + 3..]);
        } else if let Some(after_lt) = tail.strip_prefix('<') {
            match html_tag(tail) {
                Some((name, len, closing)) => {
                    removed.html_tags += 1;
                    rest = &tail[len..];
                    let hides = name == "script" || name == "style" || hides_content(&tail[..len]);
                    if !closing && hides && !tail[..len].ends_with("/>") {
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
                    rest = after_lt;
                }
            }
        } else if let Some(after) = tail.strip_prefix("![") {
            match image(after) {
                Some((url, len)) => {
                    removed.image_alts_and_titles += 1;
                    out.push_str("![](");
                    out.push_str(url);
                    out.push(')');
                    rest = &after[len..];
                }
                None => {
                    out.push_str("![");
                    rest = after;
                }
            }
        } else if let Some(after) = tail.strip_prefix('[') {
            // A link: keep its text, drop a title in its destination.
            match after.find("](").and_then(|j| {
                let dest = &after[j + 2..];
                dest.find(')').map(|k| (j, &dest[..k], j + 2 + k + 1))
            }) {
                Some((j, dest, len)) if !after[..j].contains('\n') => {
                    let (url, had_title) = strip_title(dest);
                    if had_title {
                        removed.image_alts_and_titles += 1;
                    }
                    out.push('[');
                    out.push_str(&clean_prose(&after[..j], removed));
                    out.push_str("](");
                    out.push_str(url);
                    out.push(')');
                    rest = &after[len..];
                }
                _ => {
                    out.push('[');
                    rest = after;
                }
            }
        } else {
            out.push('!');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Whether an opening tag hides its element from readers even where GitHub would keep it:
/// a `hidden` attribute or an inline style with `display:none` / `visibility:hidden`. Removing
/// such an element's text errs on the side of giving the agent less than a reader might see.
fn hides_content(tag: &str) -> bool {
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

/// Parses the rest of an image after `![`: `alt](url "title")` → (url, byte length consumed).
fn image(after: &str) -> Option<(&str, usize)> {
    let j = after.find("](")?;
    let dest_start = j + 2;
    let k = after[dest_start..].find(')')?;
    let dest = &after[dest_start..dest_start + k];
    Some((strip_title(dest).0, dest_start + k + 1))
}

/// Splits a link destination `url "title"` into the url and whether a title was present.
fn strip_title(dest: &str) -> (&str, bool) {
    let dest = dest.trim();
    match dest.find(char::is_whitespace) {
        Some(i) => (&dest[..i], true),
        None => (dest, false),
    }
}

/// Collapses runs of more than two blank lines into two.
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
