//! The HTTP/1.1 message framing of the upstream side, without I/O: request
//! heads written into a buffer, response heads parsed out of one, chunked
//! bodies decoded in place (RFC 9112 §6–§7).
//!
//! The request head comes from a request hyper's server has already parsed
//! and the header policy has rewritten, so it is written as is; the framing
//! headers are ltigate's own. The response side is strict: a head that
//! does not parse, a `Content-Length` that is not one number, a chunk line
//! that is not hex are errors (the client gets a 502), never a guess.

use std::mem::MaybeUninit;

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};

/// Most header fields in a response head.
pub const MAX_HEADERS: usize = 128;
/// Largest response head; the same bound as hyper's default read buffer.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions).
const MAX_CHUNK_LINE: usize = 4096;
/// Most bytes of trailer fields after the last chunk (they are dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// Why an upstream response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    /// The head is not an HTTP/1.x response head.
    #[error("malformed response head: {0}")]
    Head(&'static str),
    /// The head does not end within [`MAX_HEAD`] bytes.
    #[error("response head larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// `Content-Length` is not one decimal number.
    #[error("invalid Content-Length")]
    ContentLength,
    /// The chunked body breaks RFC 9112 §7.1.
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
}

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body.
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

impl RequestFraming {
    /// The framing of a body that is already over (`empty`) or has an
    /// `exact` size, else chunked.
    pub fn of(empty: bool, exact: Option<u64>) -> Self {
        match (empty, exact) {
            (true, _) => RequestFraming::Empty,
            (false, Some(n)) => RequestFraming::Length(n),
            (false, None) => RequestFraming::Chunked,
        }
    }
}

/// Writes `method target HTTP/1.1`, the headers (except the framing
/// headers) and ltigate's framing header, then the empty line.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    framing: RequestFraming,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        RequestFraming::Empty => {
            // Methods whose requests normally carry a body say it is empty.
            if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                out.extend_from_slice(b"content-length: 0\r\n");
            }
        }
        RequestFraming::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa(n, &mut [0; 20]));
            out.extend_from_slice(b"\r\n");
        }
        RequestFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes the size line of a chunk of `len` bytes.
pub fn write_chunk_size(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// How a response body is framed (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (a `HEAD` request, `1xx`, `204`, `304`).
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The final status (interim `1xx` other than `101` are skipped).
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The fields, with a conflicting or repeated length resolved.
    pub headers: HeaderMap,
    /// How the body is framed.
    pub framing: ResponseFraming,
    /// The connection may carry another request once the body is read.
    pub reusable: bool,
}

/// Parses the response head at the start of `buf` and removes it (and any
/// interim `1xx` responses before it). `Ok(None)`: more bytes are needed.
pub fn parse_response_head(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, H1Error> {
    loop {
        let Some(head) = parse_one(buf, method)? else {
            return Ok(None);
        };
        // Interim responses (100 Continue, 103 Early Hints) are skipped;
        // 101 ends the exchange.
        if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        return Ok(Some(head));
    }
}

/// One response head from the front of `buf` (`None`: not complete yet),
/// with its framing decided: status line, fields, then the body's length
/// by RFC 9112 §6.3 in its order.
///
/// Kept as one function on purpose: the head is parsed in place, by byte
/// offsets into one buffer that is split off only once the whole head is
/// known, and the framing rules read top to bottom in the RFC's order.
/// The `h1_response` fuzz target covers it.
fn parse_one(buf: &mut BytesMut, method: &Method) -> Result<Option<ResponseHead>, H1Error> {
    // Offsets of each field's name and value within the head (it is at
    // most MAX_HEAD long).
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, status, version, count) = {
        // Left uninitialised: the parser writes the fields it finds.
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut res,
            buf,
            &mut headers,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(H1Error::HeadTooLarge)
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Head("too many fields")),
            Err(_) => return Err(H1Error::Head("not an HTTP/1.x response head")),
        };
        if len > MAX_HEAD {
            return Err(H1Error::HeadTooLarge);
        }
        let base = buf.as_ptr() as usize;
        let status = res.code.ok_or(H1Error::Head("no status"))?;
        let version = match res.version {
            Some(1) => Version::HTTP_11,
            Some(0) => Version::HTTP_10,
            _ => return Err(H1Error::Head("unknown version")),
        };
        let count = res.headers.len();
        let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        for (slot, h) in fields.iter_mut().zip(res.headers.iter()) {
            *slot = (
                offset(h.name.as_bytes()),
                h.name.len() as u32,
                offset(h.value),
                h.value.len() as u32,
            );
        }
        (len, status, version, count)
    };
    let status = StatusCode::from_u16(status).map_err(|_| H1Error::Head("bad status code"))?;
    let head = buf.split_to(len).freeze();
    // Room for the X-Request-Id every response gets on its way out. No
    // more: a larger table outgrows the allocator's cache of small blocks
    // (a slow allocation and free per response, dearer than the rare
    // regrowth for the response policy's headers it would save).
    let mut headers = HeaderMap::with_capacity(count + 1);
    for &(ns, nl, vs, vl) in &fields[..count] {
        let (ns, nl, vs, vl) = (ns as usize, nl as usize, vs as usize, vl as usize);
        let name = HeaderName::from_bytes(&head[ns..ns + nl])
            .map_err(|_| H1Error::Head("bad field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..vs + vl))
            .map_err(|_| H1Error::Head("bad field value"))?;
        headers.append(name, value);
    }

    let mut reusable = version == Version::HTTP_11 && !has_token(&headers, &CONNECTION, "close");
    let no_body = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        // Both: the transfer coding wins and the length is removed before
        // the message goes on (RFC 9112 §6.3), bodiless answers included;
        // the connection is not trusted with another request.
        headers.remove(CONTENT_LENGTH);
        reusable = false;
    }
    let framing = if no_body {
        ResponseFraming::Empty
    } else if headers.contains_key(TRANSFER_ENCODING) {
        if last_coding_is_chunked(&headers) {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    } else if headers.contains_key(CONTENT_LENGTH) {
        let n = content_length(&headers)?;
        // `5, 5` or two equal fields: one length goes on to the client.
        let mut values = headers.get_all(CONTENT_LENGTH).iter();
        if values.next().is_some_and(|v| v.as_bytes().contains(&b',')) || values.next().is_some() {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        ResponseFraming::Length(n)
    } else {
        ResponseFraming::UntilClose
    };
    // A 2xx to CONNECT turns the connection into a tunnel (RFC 9112 §6.3);
    // ltigate never sends CONNECT, and never reuses such a connection.
    if framing == ResponseFraming::UntilClose
        || status == StatusCode::SWITCHING_PROTOCOLS
        || (*method == Method::CONNECT && status.is_success())
    {
        reusable = false;
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        reusable,
    }))
}

/// Whether a comma-separated header lists `token` (case-insensitively).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// One length, possibly repeated (`5, 5` or two equal fields): anything
/// else is an error.
fn content_length(headers: &HeaderMap) -> Result<u64, H1Error> {
    let mut length = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(H1Error::ContentLength);
            }
            let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::ContentLength);
            }
            length = Some(n);
        }
    }
    length.ok_or(H1Error::ContentLength)
}

/// What [`ChunkedDecoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no complete next piece: read more.
    NeedMore,
    /// The last chunk and the trailer section are through.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers(usize),
    Done,
}

/// Decodes a chunked body out of a read buffer, piece by piece, without
/// copying the data.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }
}

impl ChunkedDecoder {
    /// Takes the next piece of the body from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            match self.state {
                ChunkState::Done => return Ok(Decoded::End),
                ChunkState::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        ChunkState::Trailers(0)
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(n).freeze();
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Decoded::Data(data));
                }
                ChunkState::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(H1Error::Chunked("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS - seen)? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.state = if line.is_empty() {
                        ChunkState::Done
                    } else {
                        ChunkState::Trailers(seen + line.len() + 2)
                    };
                }
            }
        }
    }
}

/// Takes a CRLF-terminated line (without the CRLF) from the front of
/// `buf`; `None` if it is not complete yet.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, H1Error> {
    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= max {
            Err(H1Error::Chunked("line too long"))
        } else {
            Ok(None)
        };
    };
    if lf >= max {
        return Err(H1Error::Chunked("line too long"));
    }
    if lf == 0 || buf[lf - 1] != b'\r' {
        return Err(H1Error::Chunked("line not ended by CRLF"));
    }
    let mut line = buf.split_to(lf + 1);
    line.truncate(lf - 1);
    Ok(Some(line))
}

/// `1*HEXDIG [ BWS ";" extensions ]`.
fn chunk_size(line: &[u8]) -> Result<u64, H1Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(H1Error::Chunked("chunk size is not hex"));
    }
    if digits > 15 {
        return Err(H1Error::Chunked("chunk size too large"));
    }
    // Only blanks (BWS) before an extension: a CR or LF here is not one.
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    if !rest.is_empty() && rest[0] != b';' {
        return Err(H1Error::Chunked("chunk size is not hex"));
    }
    if rest.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(H1Error::Chunked("control byte in a chunk extension"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, &d| {
        n * 16 + u64::from((d as char).to_digit(16).unwrap_or(0))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Option<ResponseHead>, H1Error> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_response_head(&mut buf, &method)
    }

    #[test]
    fn a_length_beside_a_transfer_coding_never_goes_on_even_without_a_body() {
        for (raw, method) in [
            ("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Method::HEAD),
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET),
        ] {
            let h = head(raw, method.clone()).unwrap().unwrap();
            assert!(!h.headers.contains_key(CONTENT_LENGTH), "{raw} {method}");
            assert!(!h.reusable, "{raw} {method}");
        }
    }

    #[test]
    fn request_head_carries_ltigates_framing_only() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("platform"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            &Method::POST,
            "/p?q=1",
            &headers,
            RequestFraming::Length(12),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /p?q=1 HTTP/1.1\r\nhost: platform\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 12\r\n\r\n"
        );
        let mut out = Vec::new();
        write_request_head(&mut out, &Method::GET, "/", &headers, RequestFraming::Empty);
        assert!(String::from_utf8(out).unwrap().ends_with("x-a: 2\r\n\r\n"));
        for (framing, head) in [
            (
                RequestFraming::Empty,
                &b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n"[..],
            ),
            (
                RequestFraming::Chunked,
                b"PUT / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            ),
        ] {
            let mut out = Vec::new();
            write_request_head(&mut out, &Method::PUT, "/", &HeaderMap::new(), framing);
            assert_eq!(out, head);
        }
    }

    #[test]
    fn a_chunk_size_line_allows_blanks_before_an_extension_and_nothing_else() {
        for (line, size) in [
            (&b"5"[..], 5),
            (b"5;name=value", 5),
            (b"5 ;x", 5),
            (b"5\t;x", 5),
            (b"A", 10),
        ] {
            assert_eq!(
                chunk_size(line),
                Ok(size),
                "{:?}",
                line.escape_ascii().to_string()
            );
        }
        for line in [
            &b"5\r"[..],
            b"5\r;x",
            b"5\n",
            b"5 x",
            b"5\x0c;x",
            b";x",
            b"5;x\ry",
        ] {
            assert!(chunk_size(line).is_err(), "{}", line.escape_ascii());
        }
    }

    #[test]
    fn chunk_size_lines_are_lowercase_hex() {
        for (n, line) in [(1, "1\r\n"), (255, "ff\r\n"), (65536, "10000\r\n")] {
            let mut out = Vec::new();
            write_chunk_size(&mut out, n);
            assert_eq!(out, line.as_bytes());
        }
    }

    #[test]
    fn content_length_framing_and_keep_alive() {
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.framing, ResponseFraming::Length(5));
        assert!(h.reusable);
        assert_eq!(h.headers["x-y"], "z");
        assert_eq!(h.headers["content-length"], "5");
        // A repeated length goes on to the client as one value.
        for repeated in [
            "Content-Length: 5, 5\r\n",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{repeated}\r\n");
            let h = head(&raw, Method::GET).unwrap().unwrap();
            assert_eq!(h.framing, ResponseFraming::Length(5));
            let lengths: Vec<_> = h.headers.get_all("content-length").iter().collect();
            assert_eq!(lengths, ["5"], "{repeated:?}");
        }
        for bad in ["5, 6", "-1", "0x5", "", "+5", "99999999999999999999"] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                head(&raw, Method::GET).unwrap_err(),
                H1Error::ContentLength,
                "{bad}"
            );
        }
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(head(raw, Method::GET).unwrap_err(), H1Error::ContentLength);
    }

    #[test]
    fn the_head_is_removed_and_the_body_left() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..]);
        parse_response_head(&mut buf, &Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn framing_follows_rfc_9112_section_6_3() {
        let cases = [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                Method::HEAD,
                ResponseFraming::Empty,
                true,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                Method::GET,
                ResponseFraming::Empty,
                true,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Method::GET,
                ResponseFraming::Empty,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Method::GET,
                ResponseFraming::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Method::GET,
                ResponseFraming::Chunked,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Method::GET,
                ResponseFraming::UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Method::GET,
                ResponseFraming::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                ResponseFraming::UntilClose,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
                Method::GET,
                ResponseFraming::Length(0),
                false,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
                Method::GET,
                ResponseFraming::Length(0),
                false,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Method::GET,
                ResponseFraming::Empty,
                false,
            ),
            (
                "HTTP/1.1 200 Connection established\r\nContent-Length: 0\r\n\r\n",
                Method::CONNECT,
                ResponseFraming::Length(0),
                false,
            ),
        ];
        for (raw, method, framing, reusable) in cases {
            let h = head(raw, method).unwrap().unwrap();
            assert_eq!((h.framing, h.reusable), (framing, reusable), "{raw}");
        }
        let h = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert!(!h.headers.contains_key("content-length"));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let h = head(raw, Method::POST).unwrap().unwrap();
        assert_eq!(h.status, 201);
        assert!(!h.headers.contains_key("link"));
        assert!(
            head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2", Method::POST)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn partial_malformed_and_oversized_heads() {
        assert!(head("HTTP/1.1 200 OK\r\nContent-Len", Method::GET)
            .unwrap()
            .is_none());
        assert!(head("", Method::GET).unwrap().is_none());
        for bad in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        ] {
            assert!(
                matches!(head(bad, Method::GET), Err(H1Error::Head(_))),
                "{bad:?}"
            );
        }
        let big = format!("HTTP/1.1 200 OK\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head(&big, Method::GET).unwrap_err(), H1Error::HeadTooLarge);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(head(&raw, Method::GET), Err(H1Error::Head(_))));
    }

    /// Decodes `wire` fed in pieces of `step` bytes.
    fn decode_all(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), H1Error> {
        let mut dec = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => return Ok((body, buf.len())),
                Decoded::NeedMore => {
                    if fed == wire.len() {
                        return Err(H1Error::Chunked("test: ran out of input"));
                    }
                    let n = step.min(wire.len() - fed);
                    buf.extend_from_slice(&wire[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let wire = b"5\r\nhello\r\n1;ext=\"x y\"\r\n \r\nA \r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, 64, wire.len()] {
            let (body, left) = decode_all(wire, step).unwrap();
            assert_eq!(body, b"hello 0123456789", "step {step}");
            // What follows the body stays in the buffer.
            assert!(left <= 4, "step {step}");
        }
        assert_eq!(decode_all(b"0\r\n\r\n", 1).unwrap().0, b"");
    }

    #[test]
    fn malformed_chunked_bodies_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n",
            b"5 x\r\nhello\r\n",
            b"ffffffffffffffff\r\n",
            b"0\r\nX: y\n\r\n",
        ] {
            assert!(
                decode_all(bad, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            decode_all(long.as_bytes(), 512).unwrap_err(),
            H1Error::Chunked("line too long")
        );
        let trailers = format!("0\r\n{}", "X: y\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert!(decode_all(trailers.as_bytes(), 512).is_err());
    }
}
