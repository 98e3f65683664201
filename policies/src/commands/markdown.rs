//! Extracts the text blocks of a comment in which commands may appear: paragraphs and tight list
//! items outside code, quotes, HTML, headings and tables. Inline code, links and inline HTML are
//! replaced by a placeholder so a line starting with them is never a command.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// Stands in for inline content whose text must not count as a command.
const PLACEHOLDER: &str = "\u{FFFC}";

/// The command-eligible text blocks of `markdown`, lines separated by `\n`.
pub(super) fn command_blocks(markdown: &str) -> Vec<String> {
    let parser = Parser::new_ext(
        markdown,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    );
    let mut blocks = Vec::new();
    let mut current = String::new();
    // Depth of containers whose text never holds commands.
    let mut excluded = 0usize;
    // Depth of inline containers (links, images) whose text is replaced by a placeholder.
    let mut hidden_inline = 0usize;
    let flush = |current: &mut String, blocks: &mut Vec<String>| {
        if !current.trim().is_empty() {
            blocks.push(std::mem::take(current));
        }
        current.clear();
    };
    for event in parser {
        match event {
            Event::Start(tag) => match tag {
                Tag::BlockQuote(_)
                | Tag::CodeBlock(_)
                | Tag::HtmlBlock
                | Tag::Heading { .. }
                | Tag::Table(_)
                | Tag::FootnoteDefinition(_)
                | Tag::MetadataBlock(_) => {
                    flush(&mut current, &mut blocks);
                    excluded += 1;
                }
                Tag::Link { .. } | Tag::Image { .. } => {
                    if hidden_inline == 0 {
                        current.push_str(PLACEHOLDER);
                    }
                    hidden_inline += 1;
                }
                Tag::Paragraph | Tag::Item | Tag::List(_) => flush(&mut current, &mut blocks),
                _ => {}
            },
            Event::End(tag) => match tag {
                TagEnd::BlockQuote(_)
                | TagEnd::CodeBlock
                | TagEnd::HtmlBlock
                | TagEnd::Heading(_)
                | TagEnd::Table
                | TagEnd::FootnoteDefinition
                | TagEnd::MetadataBlock(_) => {
                    flush(&mut current, &mut blocks);
                    excluded = excluded.saturating_sub(1);
                }
                TagEnd::Link | TagEnd::Image => hidden_inline = hidden_inline.saturating_sub(1),
                TagEnd::Paragraph | TagEnd::Item | TagEnd::List(_) => {
                    flush(&mut current, &mut blocks)
                }
                _ => {}
            },
            _ if excluded > 0 => {}
            Event::Text(t) if hidden_inline == 0 => current.push_str(&t),
            Event::Code(_) | Event::InlineHtml(_) | Event::Html(_) | Event::InlineMath(_)
                if hidden_inline == 0 =>
            {
                current.push_str(PLACEHOLDER)
            }
            Event::SoftBreak | Event::HardBreak => current.push('\n'),
            _ => {}
        }
    }
    flush(&mut current, &mut blocks);
    blocks
}
