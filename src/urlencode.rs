//! Percent-encoding of raw path bytes, for URLs (CDN purges) and form bodies (the HTTP
//! plugin). A leaf: it imports nothing from the crate.

/// Bytes kept as they are in a URL path: RFC 3986 `unreserved`, `sub-delims`, `:`, `@`
/// and the `/` separator. Everything else (space, `%`, `?`, `#`, controls, non-ASCII,
/// bytes that are not UTF-8) becomes `%XX`, which is what a browser requests for such a
/// file name, so the purged URL is the cached one.
fn is_path_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
        )
}

/// Appends `bytes` to `out`, keeping the bytes for which `keep` holds and writing every
/// other byte as `%XX` (upper-case hex).
pub fn percent_encode_into(out: &mut String, bytes: &[u8], keep: impl Fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        if keep(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
}

/// Percent-encodes raw path bytes for use in a URL path; `/` separators are kept.
///
/// `a b/é.jpg` → `a%20b/%C3%A9.jpg`; a raw `0xff` byte → `%FF`.
pub fn encode_path(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    percent_encode_into(&mut out, bytes, is_path_safe);
    out
}

/// `application/x-www-form-urlencoded` encoding of one value (WHATWG URL standard):
/// alphanumerics and `*-._` stay, space becomes `+`, every other byte `%XX`.
pub fn form_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.split(|&byte| byte == b' ').enumerate() {
        if chunk.0 > 0 {
            out.push('+');
        }
        percent_encode_into(&mut out, chunk.1, |byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'*' | b'-' | b'.' | b'_')
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_uses_plus_for_space() {
        assert_eq!(form_encode(b"/a b/c&d=e\xff"), "%2Fa+b%2Fc%26d%3De%FF");
        assert_eq!(form_encode(b"x*-._"), "x*-._");
    }

    #[test]
    fn path_encoding_keeps_separators_and_escapes_raw_bytes() {
        assert_eq!(encode_path(b"a b/\xc3\xa9\xff"), "a%20b/%C3%A9%FF");
    }
}
