//! The upstream side's HTTP/1.1 response parser and chunked decoder
//! (`ltigate::proxy::upstream::h1`) on arbitrary bytes.
//!
//! Input layout: the first byte picks the request method (GET, HEAD, POST,
//! CONNECT) and the size of the pieces the input is read in (1–16 bytes);
//! the rest is what the upstream sent. Checked:
//!
//! - the head parser never panics, and reading the bytes in small pieces
//!   finds the same head (status, version, fields, framing, reuse) as reading
//!   them at once — a head is never decided on a partial read;
//! - a parsed head's framing agrees with its fields: one `Content-Length`
//!   whose value is the `Length`, never a length beside a transfer coding
//!   (conflicting lengths are an error or dropped for the coding), no reuse
//!   of a connection read until close or of HTTP/1.0, nothing for `HEAD`;
//! - the chunked decoder, fed what follows the head in pieces, yields the
//!   same bytes and the same end (done, more needed, or an error) as fed all
//!   at once;
//! - a body chunked by ltigate's own chunk writer, from chunks cut out of the
//!   input, decodes to exactly those bytes.

#![no_main]

use bytes::BytesMut;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Method, Version};
use libfuzzer_sys::fuzz_target;
use ltigate::proxy::upstream::h1::{
    parse_response_head, write_chunk_size, ChunkedDecoder, Decoded, H1Error, ResponseFraming,
    ResponseHead,
};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, wire)) = data.split_first() else {
        return;
    };
    let method = match selector & 3 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        _ => Method::CONNECT,
    };
    let piece = usize::from(selector >> 4) + 1;

    // The head, all at once and in pieces.
    let mut whole = BytesMut::from(wire);
    let at_once = parse_response_head(&mut whole, &method);
    let (in_pieces, mut rest) = head_in_pieces(wire, &method, piece);
    match (&at_once, &in_pieces) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_same_head(a, b);
            assert_eq!(whole, rest, "the same bytes follow the head");
        }
        (Ok(None), Ok(None)) => {}
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("at once {a:?}, in pieces {b:?}"),
    }
    let Ok(Some(head)) = at_once else {
        return;
    };
    check_framing(&head, &method);

    // What follows the head, decoded as a chunked body.
    if head.framing == ResponseFraming::Chunked {
        let once = decode_all(&mut whole);
        let pieces = decode_in_pieces(&rest.split().freeze(), piece);
        assert_eq!(once, pieces, "chunked body: at once vs in pieces");
    }

    // Chunks cut from the input, written by ltigate's writer, decode back.
    let chunks: Vec<&[u8]> = wire
        .chunks(piece * 7)
        .filter(|c| !c.is_empty())
        .take(64)
        .collect();
    let mut encoded = Vec::new();
    for c in &chunks {
        write_chunk_size(&mut encoded, c.len());
        encoded.extend_from_slice(c);
        encoded.extend_from_slice(b"\r\n");
    }
    encoded.extend_from_slice(b"0\r\n\r\n");
    let expected: Vec<u8> = chunks.concat();
    assert_eq!(
        decode_in_pieces(&encoded, piece),
        (expected, Ending::End),
        "a body chunked by write_chunk_size"
    );
});

/// Feeds `wire` to the parser `piece` bytes at a time, as reads would;
/// returns its answer and the bytes after the head (what it left in the
/// buffer, then what was not handed to it yet).
fn head_in_pieces(
    wire: &[u8],
    method: &Method,
    piece: usize,
) -> (Result<Option<ResponseHead>, H1Error>, BytesMut) {
    let mut buf = BytesMut::new();
    let mut handed = 0;
    let mut result = Ok(None);
    for part in wire.chunks(piece) {
        buf.extend_from_slice(part);
        handed += part.len();
        result = parse_response_head(&mut buf, method);
        if !matches!(result, Ok(None)) {
            break;
        }
    }
    buf.extend_from_slice(&wire[handed..]);
    (result, buf)
}

fn assert_same_head(a: &ResponseHead, b: &ResponseHead) {
    assert_eq!(a.status, b.status);
    assert_eq!(a.version, b.version);
    assert_eq!(a.framing, b.framing);
    assert_eq!(a.reusable, b.reusable);
    assert_eq!(a.headers, b.headers);
}

fn check_framing(head: &ResponseHead, method: &Method) {
    let lengths: Vec<_> = head.headers.get_all(CONTENT_LENGTH).iter().collect();
    let coded = head.headers.contains_key(TRANSFER_ENCODING);
    if *method == Method::HEAD {
        assert_eq!(head.framing, ResponseFraming::Empty, "HEAD has no body");
    }
    match head.framing {
        ResponseFraming::Length(n) => {
            assert!(!coded, "a length beside a transfer coding");
            assert_eq!(lengths.len(), 1, "one Content-Length goes on");
            // Its value is the length (leading zeros are still one number).
            let value = lengths[0].to_str().ok().and_then(|v| v.trim().parse::<u64>().ok());
            assert_eq!(value, Some(n), "the Content-Length that goes on");
        }
        ResponseFraming::Chunked => {
            assert!(coded && lengths.is_empty(), "chunked framing: {head:?}");
        }
        ResponseFraming::UntilClose => {
            assert!(lengths.is_empty(), "a length, yet read until close");
            assert!(!head.reusable, "read until close, yet reused");
        }
        ResponseFraming::Empty => {}
    }
    if coded && !lengths.is_empty() {
        panic!("both Content-Length and Transfer-Encoding went on: {head:?}");
    }
    if head.version == Version::HTTP_10 {
        assert!(!head.reusable, "an HTTP/1.0 connection reused");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ending {
    End,
    NeedMore,
    Error(H1Error),
}

/// Decodes everything in `buf` at once.
fn decode_all(buf: &mut BytesMut) -> (Vec<u8>, Ending) {
    let mut decoder = ChunkedDecoder::default();
    let mut out = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Decoded::Data(d)) => out.extend_from_slice(&d),
            Ok(Decoded::NeedMore) => return (out, Ending::NeedMore),
            Ok(Decoded::End) => return (out, Ending::End),
            Err(e) => return (out, Ending::Error(e)),
        }
    }
}

/// Decodes `wire` handed over `piece` bytes at a time.
fn decode_in_pieces(wire: &[u8], piece: usize) -> (Vec<u8>, Ending) {
    let mut decoder = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut parts = wire.chunks(piece);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => out.extend_from_slice(&d),
            Ok(Decoded::NeedMore) => match parts.next() {
                Some(p) => buf.extend_from_slice(p),
                None => return (out, Ending::NeedMore),
            },
            Ok(Decoded::End) => return (out, Ending::End),
            Err(e) => return (out, Ending::Error(e)),
        }
    }
}
