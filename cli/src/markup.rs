//! Text for SVG and HTML reports.

/// Escapes `&`, `<` and `>` for SVG and HTML text.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::escape("a<b & c>"), "a&lt;b &amp; c&gt;");
    }
}
