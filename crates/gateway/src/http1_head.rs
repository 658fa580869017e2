//! Parses one HTTP/1.x request head (request line and headers) and decides how its body is framed. Pure functions
//! over bytes, so every refusal that guards against request smuggling is unit-tested here; reading from the
//! socket belongs to `http1_connection/request_reading.rs`, writing answers to `http1_connection/response_writing.rs`.

use axum::http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, request};

/// Most headers one request may carry (hyper's default); more get 431.
pub const MAX_REQUEST_HEADERS: usize = 100;

/// A parsed request head and what the connection needs to know about it.
#[derive(Debug)]
pub struct RequestHead {
    pub parts: request::Parts,
    pub body: BodyFraming,
    /// Whether the client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    Empty,
    Length(u64),
    Chunked,
}

/// Why a head cannot be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadRefusal {
    /// More header bytes or headers than allowed: 431.
    TooLarge,
    /// Not valid HTTP/1.x, or framing that could be read two ways: 400.
    Malformed(String),
}

/// Parses the head at the start of `bytes`. `Ok(None)` means it is not complete yet; `Ok(Some((head, length)))`
/// gives the head and how many bytes it took (what follows is the body or the next request).
pub fn parse_request_head(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadRefusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_length = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadRefusal::TooLarge),
        Err(error) => return Err(malformed(format!("the request head is not valid HTTP/1.1: {error}"))),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| malformed("the request method is invalid"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let uri: Uri =
        parsed.path.unwrap_or_default().parse().map_err(|_| malformed("the request target is invalid"))?;
    let mut header_map = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| malformed(format!("invalid header name {:?}", header.name)))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| malformed(format!("invalid value for header {name}")))?;
        header_map.append(name, value);
    }
    let body = body_framing(&header_map, version)?;
    let keep_alive = version == Version::HTTP_11 && !has_token(&header_map, &CONNECTION, "close");
    let expects_continue = version == Version::HTTP_11
        && header_map.get(EXPECT).is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = header_map;
    Ok(Some((RequestHead { parts, body, keep_alive, expects_continue }, head_length)))
}

/// The body's framing (RFC 9112 section 6). Anything a proxy in front could read differently is refused rather
/// than guessed: both `Transfer-Encoding` and `Content-Length`, a coding other than `chunked`, lengths that
/// disagree.
fn body_framing(headers: &HeaderMap, version: Version) -> Result<BodyFraming, HeadRefusal> {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_some() {
        if version != Version::HTTP_11 {
            return Err(malformed("Transfer-Encoding is not allowed in an HTTP/1.0 request"));
        }
        if headers.contains_key(CONTENT_LENGTH) {
            return Err(malformed("a request may not carry both Transfer-Encoding and Content-Length"));
        }
        let mut tokens = codings.flat_map(|value| value.as_bytes().split(|byte| *byte == b','));
        let only_chunked =
            tokens.next().is_some_and(|token| token.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                && tokens.next().is_none();
        if !only_chunked {
            return Err(malformed("the only supported Transfer-Encoding is chunked"));
        }
        return Ok(BodyFraming::Chunked);
    }
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for token in value.as_bytes().split(|byte| *byte == b',') {
            let token = token.trim_ascii();
            let parsed = (!token.is_empty() && token.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(token).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| malformed("Content-Length is not a number"))?;
            if length.is_some_and(|earlier| earlier != parsed) {
                return Err(malformed("the request carries different Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    Ok(match length {
        None | Some(0) => BodyFraming::Empty,
        Some(length) => BodyFraming::Length(length),
    })
}

/// Whether a comma-separated header (such as `Connection`) holds `token`, in any case.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|byte| *byte == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn malformed(message: impl Into<String>) -> HeadRefusal {
    HeadRefusal::Malformed(message.into())
}

/// Parses one chunk-size line of a chunked body (without its line ending): the size in hex, maybe followed by
/// `;extensions`, which are ignored.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, HeadRefusal> {
    let size = line.split(|byte| *byte == b';').next().unwrap_or_default().trim_ascii();
    let valid = !size.is_empty() && size.len() <= 15 && size.iter().all(u8::is_ascii_hexdigit);
    let text =
        std::str::from_utf8(size).ok().filter(|_| valid).ok_or_else(|| malformed("invalid chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| malformed("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, HeadRefusal> {
        parse_request_head(text.as_bytes())
    }

    fn complete(text: &str) -> RequestHead {
        parse(text).expect("a valid head").expect("a complete head").0
    }

    #[test]
    fn a_complete_head_gives_method_path_headers_and_its_length() {
        let text = "POST /api/chats?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let (head, length) = parse(text).expect("valid").expect("complete");
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri.path(), "/api/chats");
        assert_eq!(head.parts.headers["host"], "a");
        assert_eq!(head.body, BodyFraming::Length(5));
        assert!(head.keep_alive);
        assert_eq!(&text[length..], "hello");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_bytes() {
        assert!(parse("GET /healthz HTTP/1.1\r\nHost: a\r\n").expect("valid so far").is_none());
    }

    #[test]
    fn connection_close_and_http_1_0_end_the_connection_after_the_answer() {
        let head = complete("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(!head.keep_alive);
        let head = complete("GET / HTTP/1.0\r\n\r\n");
        assert!(!head.keep_alive);
        assert_eq!(head.parts.version, Version::HTTP_10);
    }

    #[test]
    fn framing_that_could_be_read_two_ways_is_refused() {
        let both = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(parse(both), Err(HeadRefusal::Malformed(_))));
        let disagreeing = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert!(matches!(parse(disagreeing), Err(HeadRefusal::Malformed(_))));
        let gzip = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert!(matches!(parse(gzip), Err(HeadRefusal::Malformed(_))));
        let signed = "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n";
        assert!(matches!(parse(signed), Err(HeadRefusal::Malformed(_))));
        let old_chunked = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(old_chunked), Err(HeadRefusal::Malformed(_))));
    }

    #[test]
    fn repeated_equal_lengths_and_chunked_bodies_are_accepted() {
        let repeated = "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n";
        assert_eq!(complete(repeated).body, BodyFraming::Length(3));
        let chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n";
        let head = complete(chunked);
        assert_eq!(head.body, BodyFraming::Chunked);
        assert!(head.expects_continue);
    }

    #[test]
    fn too_many_headers_are_too_large_and_garbage_is_malformed() {
        let many: String = (0..=MAX_REQUEST_HEADERS).map(|index| format!("x-{index}: y\r\n")).collect();
        assert_eq!(parse(&format!("GET / HTTP/1.1\r\n{many}\r\n")).err(), Some(HeadRefusal::TooLarge));
        assert!(matches!(parse("HELLO\r\n\r\n"), Err(HeadRefusal::Malformed(_))));
    }

    #[test]
    fn chunk_sizes_are_hex_with_optional_extensions() {
        assert_eq!(parse_chunk_size(b"1a"), Ok(26));
        assert_eq!(parse_chunk_size(b"0;name=value"), Ok(0));
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"+5").is_err());
        assert!(parse_chunk_size(b"ffffffffffffffffff").is_err());
    }
}
