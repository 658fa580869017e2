//! The `[[mock key=value ...]]` directive: finding it in a message and taking it out, purely as syntax. What its
//! keys mean and how their values are read is `knobs.rs`; the keys themselves are `knob_table.rs`.

/// Opens a directive; the closing is `]]`. Only the last user message is searched.
pub(crate) const DIRECTIVE_OPENING: &str = "[[mock";
pub(crate) const DIRECTIVE_CLOSING: &str = "]]";

/// `text` without its mock directives, trimmed. Purely syntactic: a directive with bad values is still removed, and
/// text with an unterminated directive comes back trimmed but otherwise unchanged.
pub fn strip_mock_directives(text: &str) -> String {
    match scan_mock_directives(text) {
        Some(scan) => scan.text_without_directives,
        None => text.trim().to_owned(),
    }
}

/// The directives found in a text, and the text without them.
pub(crate) struct DirectiveScan<'text> {
    pub directive_bodies: Vec<&'text str>,
    pub text_without_directives: String,
}

/// Finds every `[[mock ...]]`; `None` when one is not closed. Each directive is replaced by a space so that the
/// words on either side stay apart.
pub(crate) fn scan_mock_directives(text: &str) -> Option<DirectiveScan<'_>> {
    let mut directive_bodies = Vec::new();
    let mut text_without_directives = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(opening_start) = find_directive_opening(rest) {
        text_without_directives.push_str(&rest[..opening_start]);
        text_without_directives.push(' ');
        let after_opening = &rest[opening_start + DIRECTIVE_OPENING.len()..];
        let closing_start = after_opening.find(DIRECTIVE_CLOSING)?;
        directive_bodies.push(&after_opening[..closing_start]);
        rest = &after_opening[closing_start + DIRECTIVE_CLOSING.len()..];
    }
    text_without_directives.push_str(rest);
    let text_without_directives = text_without_directives.trim().to_owned();
    Some(DirectiveScan { directive_bodies, text_without_directives })
}

/// The start of the first `[[mock` followed by whitespace or the closing, so `[[mockingbird]]` is left alone.
fn find_directive_opening(text: &str) -> Option<usize> {
    text.match_indices(DIRECTIVE_OPENING).map(|(start, _)| start).find(|&start| {
        let after_opening = &text[start + DIRECTIVE_OPENING.len()..];
        after_opening.starts_with(DIRECTIVE_CLOSING) || after_opening.starts_with(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_directive_is_found_and_replaced_by_a_space() {
        let scan = scan_mock_directives("a[[mock tokens=1]]b [[mock]] c").expect("closed directives");
        assert_eq!(scan.directive_bodies, [" tokens=1", ""]);
        assert_eq!(scan.text_without_directives, "a b   c");
    }

    #[test]
    fn an_unterminated_directive_is_no_scan_and_strips_to_the_trimmed_text() {
        assert!(scan_mock_directives("hi [[mock tokens=3").is_none());
        assert_eq!(strip_mock_directives(" hi [[mock tokens=3 "), "hi [[mock tokens=3");
    }
}
