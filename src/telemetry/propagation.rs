//! Trace context in and out of HTTP heads: W3C `traceparent` and Zipkin B3 (single and multi).
//!
//! Read from raw fields so that both HTTP paths share one parser; written per proxy attempt.
//! Only consulted when traces are on: with traces off the fields cross untouched.

use std::fmt::Write as _;

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// Field names, lower case.
pub(crate) mod name {
    pub(crate) const TRACEPARENT: &str = "traceparent";
    pub(crate) const B3: &str = "b3";
    pub(crate) const B3_TRACE_ID: &str = "x-b3-traceid";
    pub(crate) const B3_SPAN_ID: &str = "x-b3-spanid";
    pub(crate) const B3_PARENT_SPAN_ID: &str = "x-b3-parentspanid";
    pub(crate) const B3_SAMPLED: &str = "x-b3-sampled";
    pub(crate) const B3_FLAGS: &str = "x-b3-flags";
}

/// Every field that carries trace context; with traces on, the client's are replaced.
pub(crate) const NAMES: [&str; 7] = [
    name::TRACEPARENT,
    name::B3,
    name::B3_TRACE_ID,
    name::B3_SPAN_ID,
    name::B3_PARENT_SPAN_ID,
    name::B3_SAMPLED,
    name::B3_FLAGS,
];

/// Longest field value looked at; a longer one is ignored as malformed.
const MAX_VALUE: usize = 128;

/// How the client carried B3, so that the pod gets it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum B3 {
    /// One `b3` field.
    Single,
    /// `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-Sampled`.
    Multi,
}

/// The trace fields of one request head, gathered in one pass over its fields.
#[derive(Debug, Default)]
pub(crate) struct Incoming<'a> {
    traceparent: Option<&'a [u8]>,
    b3: Option<&'a [u8]>,
    trace_id: Option<&'a [u8]>,
    span_id: Option<&'a [u8]>,
    sampled: Option<&'a [u8]>,
    flags: Option<&'a [u8]>,
    any_multi: bool,
}

impl<'a> Incoming<'a> {
    /// Takes the field if it carries trace context; `true` if it did (the caller then leaves
    /// it out of the request to the pod, which gets the activator's own context instead).
    pub(crate) fn add(&mut self, field: &str, value: &'a [u8]) -> bool {
        let eq = |n: &str| field.eq_ignore_ascii_case(n);
        if eq(name::TRACEPARENT) {
            // A repeated field is invalid (W3C §3.2.1 allows one): the first one is kept,
            // and parsing it decides.
            self.traceparent.get_or_insert(value);
        } else if eq(name::B3) {
            self.b3.get_or_insert(value);
        } else if !field
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("x-b3-"))
        {
            return false;
        } else if eq(name::B3_TRACE_ID) {
            self.trace_id.get_or_insert(value);
            self.any_multi = true;
        } else if eq(name::B3_SPAN_ID) {
            self.span_id.get_or_insert(value);
            self.any_multi = true;
        } else if eq(name::B3_SAMPLED) {
            self.sampled.get_or_insert(value);
            self.any_multi = true;
        } else if eq(name::B3_FLAGS) {
            self.flags.get_or_insert(value);
            self.any_multi = true;
        } else if eq(name::B3_PARENT_SPAN_ID) {
            self.any_multi = true;
        } else {
            return false;
        }
        true
    }

    /// The client's context: `traceparent` when valid, else B3 single, else B3 multi.
    pub(crate) fn parent(&self) -> Parent {
        let b3 = if self.b3.is_some() {
            Some(B3::Single)
        } else if self.any_multi {
            Some(B3::Multi)
        } else {
            None
        };
        let context = self
            .traceparent
            .and_then(traceparent)
            .or_else(|| self.b3.and_then(b3_single))
            .or_else(|| b3_multi(self.trace_id?, self.span_id?, self.sampled, self.flags));
        Parent { context, b3 }
    }
}

/// What the client sent: its span (if any valid one) and whether it spoke B3.
#[derive(Debug, Clone, Default)]
pub(crate) struct Parent {
    pub(crate) context: Option<SpanContext>,
    pub(crate) b3: Option<B3>,
}

/// The fields that carry `span` to the pod: `traceparent` always, B3 as the client sent it.
/// Lower-case names with their values.
pub(crate) fn outgoing(span: &SpanContext, b3: Option<B3>) -> Vec<(&'static str, String)> {
    let trace = span.trace_id();
    let id = span.span_id();
    let sampled = span.is_sampled();
    let mut out = Vec::with_capacity(4);
    out.push((
        name::TRACEPARENT,
        format!("00-{trace}-{id}-{:02x}", span.trace_flags().to_u8()),
    ));
    let bit = if sampled { "1" } else { "0" };
    match b3 {
        Some(B3::Single) => {
            let mut v = String::with_capacity(52);
            let _ = write!(v, "{trace}-{id}-{bit}");
            out.push((name::B3, v));
        }
        Some(B3::Multi) => {
            out.push((name::B3_TRACE_ID, trace.to_string()));
            out.push((name::B3_SPAN_ID, id.to_string()));
            out.push((name::B3_SAMPLED, bit.to_owned()));
        }
        None => {}
    }
    out
}

/// Lower-case hex of exactly `len` digits.
fn hex(v: &[u8], len: usize) -> Option<&str> {
    (v.len() == len && v.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
}

/// A remote parent, refused when an id is all zeros (invalid in both formats).
fn remote(trace_id: TraceId, span_id: SpanId, sampled: bool) -> Option<SpanContext> {
    let flags = if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let cx = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    cx.is_valid().then_some(cx)
}

/// W3C Trace Context `traceparent`: `version-traceid-parentid-flags`, lower-case hex.
/// Version `ff` is invalid; version `00` is exactly 55 characters; a later version may append
/// `-`-separated fields, which are ignored (§3.2.4).
pub(crate) fn traceparent(v: &[u8]) -> Option<SpanContext> {
    if v.len() < 55 || v.len() > MAX_VALUE {
        return None;
    }
    let version = hex(&v[..2], 2)?;
    if version == "ff" || (version == "00" && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = TraceId::from_hex(hex(&v[3..35], 32)?).ok()?;
    let span_id = SpanId::from_hex(hex(&v[36..52], 16)?).ok()?;
    let flags = u8::from_str_radix(hex(&v[53..55], 2)?, 16).ok()?;
    remote(trace_id, span_id, flags & 1 == 1)
}

/// A B3 trace id: 32 hex digits, or 16 (64-bit, widened with zeros as Zipkin does).
fn b3_trace_id(v: &[u8]) -> Option<TraceId> {
    let v = v.trim_ascii();
    match v.len() {
        32 => TraceId::from_hex(hex(v, 32)?).ok(),
        16 => TraceId::from_hex(hex(v, 16)?).ok(),
        _ => None,
    }
}

fn b3_span_id(v: &[u8]) -> Option<SpanId> {
    SpanId::from_hex(hex(v.trim_ascii(), 16)?).ok()
}

/// B3 single: `traceid-spanid[-sampled[-parentspanid]]`, sampled being `1`, `0` or `d`
/// (debug, which implies sampled). A lone sampling state carries no ids: no parent.
pub(crate) fn b3_single(v: &[u8]) -> Option<SpanContext> {
    if v.len() > MAX_VALUE {
        return None;
    }
    let mut parts = v.trim_ascii().split(|&b| b == b'-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = b3_span_id(parts.next()?)?;
    let sampled = match parts.next() {
        None => false,
        Some(b"1" | b"d") => true,
        Some(b"0") => false,
        Some(_) => return None,
    };
    if parts.next().is_some_and(|p| b3_span_id(p).is_none()) || parts.next().is_some() {
        return None;
    }
    remote(trace_id, span_id, sampled)
}

/// B3 multi: `X-B3-Sampled` `1`/`true` or `X-B3-Flags: 1` (debug) mean sampled; absent
/// ("defer") is read as not sampled, as OpenTelemetry's B3 propagators read it.
pub(crate) fn b3_multi(
    trace_id: &[u8],
    span_id: &[u8],
    sampled: Option<&[u8]>,
    flags: Option<&[u8]>,
) -> Option<SpanContext> {
    let trace_id = b3_trace_id(trace_id)?;
    let span_id = b3_span_id(span_id)?;
    let debug = flags.is_some_and(|f| f.trim_ascii() == b"1");
    let sampled = debug
        || sampled.is_some_and(|s| {
            let s = s.trim_ascii();
            s == b"1" || s.eq_ignore_ascii_case(b"true")
        });
    remote(trace_id, span_id, sampled)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parent(fields: &[(&str, &str)]) -> Parent {
        let mut incoming = Incoming::default();
        for (n, v) in fields {
            incoming.add(n, v.as_bytes());
        }
        incoming.parent()
    }

    #[test]
    fn traceparent_is_read_as_w3c_says() {
        let cx = traceparent(TP.as_bytes()).expect("valid");
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled() && cx.is_remote());
        let unsampled = TP.replace("-01", "-00");
        assert!(
            !traceparent(unsampled.as_bytes())
                .expect("valid")
                .is_sampled()
        );
        // A later version with an extra field is read; version 00 with one is not.
        let future = format!("cc{}-what-ever", &TP[2..]);
        assert!(traceparent(future.as_bytes()).is_some());
        assert!(traceparent(format!("{TP}-x").as_bytes()).is_none());
        for bad in [
            TP.to_uppercase(),
            TP.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            TP.replace("00f067aa0ba902b7", &"0".repeat(16)),
            format!("ff{}", &TP[2..]),
            TP[..54].to_owned(),
            TP.replace('-', "_"),
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01".to_owned(),
            String::new(),
        ] {
            assert!(traceparent(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn b3_single_and_multi() {
        let cx = b3_single(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
            .expect("valid");
        assert_eq!(
            cx.trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(cx.span_id().to_string(), "e457b5a2e4d86bd1");
        assert!(cx.is_sampled());
        let short = b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-d").expect("64-bit id");
        assert_eq!(
            short.trace_id().to_string(),
            "000000000000000064fe8b2a57d3eff7"
        );
        assert!(short.is_sampled());
        assert!(
            !b3_single(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1")
                .expect("valid")
                .is_sampled()
        );
        for bad in [
            "0",
            "1",
            "d",
            "x-y",
            "64fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
            "a-b-1-c-d",
        ] {
            assert!(b3_single(bad.as_bytes()).is_none(), "{bad}");
        }
        let multi = parent(&[
            ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", "e457b5a2e4d86bd1"),
            ("X-B3-Sampled", "1"),
        ]);
        assert_eq!(multi.b3, Some(B3::Multi));
        assert!(multi.context.expect("valid").is_sampled());
        let debug = b3_multi(b"64fe8b2a57d3eff7", b"e457b5a2e4d86bd1", None, Some(b"1"));
        assert!(debug.expect("valid").is_sampled());
        let deferred = b3_multi(b"64fe8b2a57d3eff7", b"e457b5a2e4d86bd1", None, None);
        assert!(!deferred.expect("valid").is_sampled());
    }

    #[test]
    fn traceparent_wins_and_the_b3_style_is_kept() {
        let both = parent(&[
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("TraceParent", TP),
        ]);
        assert_eq!(both.b3, Some(B3::Single));
        let cx = both.context.expect("valid");
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        // An invalid traceparent falls back to B3.
        let fallback = parent(&[
            ("traceparent", "garbage"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        ]);
        assert_eq!(
            fallback.context.expect("b3").trace_id().to_string(),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        let none = parent(&[("x-b3-whatever", "1"), ("tracestate", "a=b")]);
        assert!(none.context.is_none() && none.b3.is_none());
    }

    #[test]
    fn outgoing_fields_round_trip() {
        let cx = traceparent(TP.as_bytes()).expect("valid");
        let fields = outgoing(&cx, Some(B3::Single));
        assert_eq!(fields[0], (name::TRACEPARENT, TP.to_owned()));
        assert_eq!(
            b3_single(fields[1].1.as_bytes()).expect("b3").trace_id(),
            cx.trace_id()
        );
        let multi = outgoing(&cx, Some(B3::Multi));
        assert_eq!(multi.len(), 4);
        assert_eq!(multi[3], (name::B3_SAMPLED, "1".to_owned()));
        assert_eq!(outgoing(&cx, None).len(), 1);
    }

    #[test]
    fn garbage_never_panics() {
        for v in [&b""[..], b"-", b"--", b"\xff\xfe", &[b'-'; 200], b"00-\xff"] {
            let _ = traceparent(v);
            let _ = b3_single(v);
            let _ = b3_multi(v, v, Some(v), Some(v));
        }
        let mut long = TP.as_bytes().to_vec();
        long.resize(56, b'-');
        let _ = traceparent(&long);
    }
}
