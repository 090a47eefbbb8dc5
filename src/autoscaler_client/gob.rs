//! Go `encoding/gob` for exactly one shape: Knative v0.5/v0.6 `StatMessage` (the 2019 wire format).
//!
//! Each frame is a complete gob stream from a fresh encoder: the type definitions of
//! `StatMessage`, `Stat` and `time.Time`, then the value. The encoder emits the definitions as a
//! constant (they never change) and builds only the value. The decoder reads the definitions
//! generically, so frames from real Go encoders of compatible shapes decode too (extra fields
//! are skipped, `RequestCount` may be an int or a float, `Key` a string or a
//! `{Namespace, Name}` struct), and rejects anything else with an error.

use std::collections::HashMap;

/// Decoded `StatMessage` (field names as in Go).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GobStat {
    pub namespace: String,
    pub name: String,
    pub pod_name: String,
    pub average_concurrent_requests: f64,
    pub average_proxied_concurrent_requests: f64,
    pub request_count: f64,
    pub proxied_request_count: f64,
}

/// Why a frame is not a gob `StatMessage`.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum GobError {
    #[error("gob: unexpected end of data")]
    Truncated,
    #[error("gob: {0}")]
    Malformed(&'static str),
    #[error("gob: unknown type id {0}")]
    UnknownType(i64),
    #[error("gob: field {field}: {message}")]
    Field {
        field: &'static str,
        message: &'static str,
    },
}

/// Messages 1–3 of every frame: the definitions of `StatMessage` (id 65), `Stat` (id 66) and
/// `time.Time` (id 67, a GobEncoder), byte for byte what Go's encoder writes.
const TYPE_DEFINITIONS: &[u8] = &[
    // StatMessage { Key string; Stat Stat }
    0x2b, 0xff, 0x81, 0x03, 0x01, 0x01, 0x0b, b'S', b't', b'a', b't', b'M', b'e', b's', b's', b'a',
    b'g', b'e', 0x01, 0xff, 0x82, 0x00, 0x01, 0x02, 0x01, 0x03, b'K', b'e', b'y', 0x01, 0x0c, 0x00,
    0x01, 0x04, b'S', b't', b'a', b't', 0x01, 0xff, 0x84, 0x00, 0x00, 0x00,
    // Stat { Time *time.Time; PodName string; AverageConcurrentRequests float64;
    //        AverageProxiedConcurrentRequests float64; RequestCount int32; ProxiedRequestCount int32 }
    0xff, 0x94, 0xff, 0x83, 0x03, 0x01, 0x01, 0x04, b'S', b't', b'a', b't', 0x01, 0xff, 0x84, 0x00,
    0x01, 0x06, 0x01, 0x04, b'T', b'i', b'm', b'e', 0x01, 0xff, 0x86, 0x00, 0x01, 0x07, b'P', b'o',
    b'd', b'N', b'a', b'm', b'e', 0x01, 0x0c, 0x00, 0x01, 0x19, b'A', b'v', b'e', b'r', b'a', b'g',
    b'e', b'C', b'o', b'n', b'c', b'u', b'r', b'r', b'e', b'n', b't', b'R', b'e', b'q', b'u', b'e',
    b's', b't', b's', 0x01, 0x08, 0x00, 0x01, 0x20, b'A', b'v', b'e', b'r', b'a', b'g', b'e', b'P',
    b'r', b'o', b'x', b'i', b'e', b'd', b'C', b'o', b'n', b'c', b'u', b'r', b'r', b'e', b'n', b't',
    b'R', b'e', b'q', b'u', b'e', b's', b't', b's', 0x01, 0x08, 0x00, 0x01, 0x0c, b'R', b'e', b'q',
    b'u', b'e', b's', b't', b'C', b'o', b'u', b'n', b't', 0x01, 0x04, 0x00, 0x01, 0x13, b'P', b'r',
    b'o', b'x', b'i', b'e', b'd', b'R', b'e', b'q', b'u', b'e', b's', b't', b'C', b'o', b'u', b'n',
    b't', 0x01, 0x04, 0x00, 0x00, 0x00, // time.Time: a GobEncoder
    0x0a, 0xff, 0x85, 0x05, 0x01, 0x02, 0xff, 0x88, 0x00, 0x00, 0x00,
];

/// Type id of `StatMessage` in [`TYPE_DEFINITIONS`].
const STAT_MESSAGE_ID: i64 = 65;

// Predefined gob type ids.
const T_BOOL: i64 = 1;
const T_INT: i64 = 2;
const T_UINT: i64 = 3;
const T_FLOAT: i64 = 4;
const T_BYTES: i64 = 5;
const T_STRING: i64 = 6;
const T_COMPLEX: i64 = 7;
const T_INTERFACE: i64 = 8;

/// Nesting deeper than this is rejected (a hostile frame must not exhaust the stack).
const MAX_DEPTH: usize = 16;
/// Type definitions per frame; the real shape needs three.
const MAX_TYPES: usize = 64;

/// Encodes one `StatMessage` frame. Counts are `int32` in this shape: rounded and saturated.
pub fn encode(key: &str, stat: &GobStat) -> Vec<u8> {
    let mut value = Vec::with_capacity(64 + key.len() + stat.pod_name.len());
    put_int(&mut value, STAT_MESSAGE_ID);
    // StatMessage fields: Key (0), Stat (1).
    put_uint(&mut value, 1);
    put_bytes(&mut value, key.as_bytes());
    put_uint(&mut value, 1);
    // Stat fields: Time (0, nil: never sent), PodName (1), ACR (2), APCR (3), RC (4), PRC (5).
    let mut last = -1i64;
    let mut field = |value: &mut Vec<u8>, index: i64| {
        put_uint(value, (index - last) as u64);
        last = index;
    };
    if !stat.pod_name.is_empty() {
        field(&mut value, 1);
        put_bytes(&mut value, stat.pod_name.as_bytes());
    }
    if stat.average_concurrent_requests != 0.0 {
        field(&mut value, 2);
        put_float(&mut value, stat.average_concurrent_requests);
    }
    if stat.average_proxied_concurrent_requests != 0.0 {
        field(&mut value, 3);
        put_float(&mut value, stat.average_proxied_concurrent_requests);
    }
    let rc = to_int32(stat.request_count);
    if rc != 0 {
        field(&mut value, 4);
        put_int(&mut value, i64::from(rc));
    }
    let prc = to_int32(stat.proxied_request_count);
    if prc != 0 {
        field(&mut value, 5);
        put_int(&mut value, i64::from(prc));
    }
    value.push(0); // end of Stat
    value.push(0); // end of StatMessage
    let mut frame = Vec::with_capacity(TYPE_DEFINITIONS.len() + value.len() + 9);
    frame.extend_from_slice(TYPE_DEFINITIONS);
    put_uint(&mut frame, value.len() as u64);
    frame.extend_from_slice(&value);
    frame
}

fn to_int32(v: f64) -> i32 {
    // `as` saturates and maps NaN to 0, which is what a count wants.
    v.round() as i32
}

fn put_uint(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let n = bytes.len() - skip;
    out.push((n as u8).wrapping_neg());
    out.extend_from_slice(&bytes[skip..]);
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    let u = if v < 0 {
        ((!v as u64) << 1) | 1
    } else {
        (v as u64) << 1
    };
    put_uint(out, u);
}

fn put_float(out: &mut Vec<u8>, v: f64) {
    put_uint(out, v.to_bits().swap_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Decodes one frame (a complete gob stream) into the `StatMessage`s it carries.
pub fn decode(frame: &[u8]) -> Result<Vec<GobStat>, GobError> {
    let mut outer = Reader::new(frame);
    let mut types: HashMap<i64, WireType> = HashMap::new();
    let mut out = Vec::new();
    while !outer.is_empty() {
        let len = outer.uint()?;
        let len = usize::try_from(len).map_err(|_| GobError::Truncated)?;
        let mut msg = Reader::new(outer.take(len)?);
        let id = msg.int()?;
        if id < 0 {
            if types.len() >= MAX_TYPES {
                return Err(GobError::Malformed("too many type definitions"));
            }
            let id = id
                .checked_neg()
                .ok_or(GobError::Malformed("type id out of range"))?;
            let wt = read_wire_type(&mut msg)?;
            types.insert(id, wt);
        } else {
            let value = Decoder { types: &types }.value(&mut msg, id, 0)?;
            out.push(stat_message(value)?);
        }
        if !msg.is_empty() {
            return Err(GobError::Malformed("trailing bytes in message"));
        }
    }
    if out.is_empty() {
        return Err(GobError::Malformed("no value in frame"));
    }
    Ok(out)
}

/// A type definition, as much of it as decoding needs.
#[derive(Debug, Clone)]
enum WireType {
    Array {
        elem: i64,
    },
    Slice {
        elem: i64,
    },
    Struct {
        fields: Vec<(String, i64)>,
    },
    Map {
        key: i64,
        elem: i64,
    },
    /// GobEncoder / BinaryMarshaler / TextMarshaler: opaque bytes.
    Opaque,
}

/// A decoded value, generic enough for any shape.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Bool,
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Bytes,
    Struct(Vec<(String, Value)>),
    Other,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], GobError> {
        if n > self.buf.len() {
            return Err(GobError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn uint(&mut self) -> Result<u64, GobError> {
        let first = self.take(1)?[0];
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        let n = usize::from(first.wrapping_neg());
        if n > 8 {
            return Err(GobError::Malformed("uint longer than 8 bytes"));
        }
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn int(&mut self) -> Result<i64, GobError> {
        let u = self.uint()?;
        Ok(if u & 1 == 1 {
            !((u >> 1) as i64)
        } else {
            (u >> 1) as i64
        })
    }

    fn float(&mut self) -> Result<f64, GobError> {
        Ok(f64::from_bits(self.uint()?.swap_bytes()))
    }

    fn bytes(&mut self) -> Result<&'a [u8], GobError> {
        let n = usize::try_from(self.uint()?).map_err(|_| GobError::Truncated)?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, GobError> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| GobError::Malformed("string is not UTF-8"))
    }

    /// Reads the field deltas of a struct, calling `f` with each field index; stops at 0.
    fn fields(
        &mut self,
        mut f: impl FnMut(&mut Self, i64) -> Result<(), GobError>,
    ) -> Result<(), GobError> {
        let mut index = -1i64;
        loop {
            let delta = self.uint()?;
            if delta == 0 {
                return Ok(());
            }
            index = i64::try_from(delta)
                .ok()
                .and_then(|d| index.checked_add(d))
                .ok_or(GobError::Malformed("field delta overflows"))?;
            f(self, index)?;
        }
    }
}

/// `CommonType { Name string; Id typeId }`: only needed to move past it.
fn skip_common_type(r: &mut Reader<'_>) -> Result<(), GobError> {
    r.fields(|r, i| match i {
        0 => r.bytes().map(drop),
        1 => r.int().map(drop),
        _ => Err(GobError::Malformed("unknown CommonType field")),
    })
}

/// `wireType { ArrayT; SliceT; StructT; MapT; GobEncoderT; BinaryMarshalerT; TextMarshalerT }`.
fn read_wire_type(r: &mut Reader<'_>) -> Result<WireType, GobError> {
    let mut wt = None;
    r.fields(|r, i| {
        if wt.is_some() {
            return Err(GobError::Malformed("wireType with two kinds"));
        }
        wt = Some(match i {
            // arrayType { CommonType; Elem typeId; Len int }
            0 => {
                let mut elem = 0;
                r.fields(|r, j| match j {
                    0 => skip_common_type(r),
                    1 => r.int().map(|e| elem = e),
                    2 => r.int().map(drop),
                    _ => Err(GobError::Malformed("unknown arrayType field")),
                })?;
                WireType::Array { elem }
            }
            // sliceType { CommonType; Elem typeId }
            1 => {
                let mut elem = 0;
                r.fields(|r, j| match j {
                    0 => skip_common_type(r),
                    1 => r.int().map(|e| elem = e),
                    _ => Err(GobError::Malformed("unknown sliceType field")),
                })?;
                WireType::Slice { elem }
            }
            // structType { CommonType; Field []fieldType{Name string; Id typeId} }
            2 => {
                let mut fields = Vec::new();
                r.fields(|r, j| match j {
                    0 => skip_common_type(r),
                    1 => {
                        let n = r.uint()?;
                        if n > 256 {
                            return Err(GobError::Malformed("struct with too many fields"));
                        }
                        for _ in 0..n {
                            let (mut name, mut id) = (String::new(), 0);
                            r.fields(|r, k| match k {
                                0 => r.string().map(|s| name = s),
                                1 => r.int().map(|v| id = v),
                                _ => Err(GobError::Malformed("unknown fieldType field")),
                            })?;
                            fields.push((name, id));
                        }
                        Ok(())
                    }
                    _ => Err(GobError::Malformed("unknown structType field")),
                })?;
                WireType::Struct { fields }
            }
            // mapType { CommonType; Key typeId; Elem typeId }
            3 => {
                let (mut key, mut elem) = (0, 0);
                r.fields(|r, j| match j {
                    0 => skip_common_type(r),
                    1 => r.int().map(|v| key = v),
                    2 => r.int().map(|v| elem = v),
                    _ => Err(GobError::Malformed("unknown mapType field")),
                })?;
                WireType::Map { key, elem }
            }
            // gobEncoderType { CommonType } (and the two marshaler kinds)
            4..=6 => {
                r.fields(|r, j| match j {
                    0 => skip_common_type(r),
                    _ => Err(GobError::Malformed("unknown gobEncoderType field")),
                })?;
                WireType::Opaque
            }
            _ => return Err(GobError::Malformed("unknown wireType kind")),
        });
        Ok(())
    })?;
    wt.ok_or(GobError::Malformed("empty wireType"))
}

struct Decoder<'t> {
    types: &'t HashMap<i64, WireType>,
}

impl Decoder<'_> {
    /// A top-level value: structs are sent as is, anything else behind a zero "field delta".
    fn value(&self, r: &mut Reader<'_>, id: i64, depth: usize) -> Result<Value, GobError> {
        if !matches!(self.types.get(&id), Some(WireType::Struct { .. })) && r.uint()? != 0 {
            return Err(GobError::Malformed(
                "non-struct value without singleton marker",
            ));
        }
        self.field(r, id, depth)
    }

    fn field(&self, r: &mut Reader<'_>, id: i64, depth: usize) -> Result<Value, GobError> {
        if depth > MAX_DEPTH {
            return Err(GobError::Malformed("nesting too deep"));
        }
        match id {
            T_BOOL => r.uint().map(|_| Value::Bool),
            T_INT => r.int().map(Value::Int),
            T_UINT => r.uint().map(Value::Uint),
            T_FLOAT => r.float().map(Value::Float),
            T_BYTES => r.bytes().map(|_| Value::Bytes),
            T_STRING => r.string().map(Value::Str),
            T_COMPLEX => {
                r.float()?;
                r.float()?;
                Ok(Value::Other)
            }
            T_INTERFACE => {
                // name, then (if not nil) type id, byte count and the value's bytes.
                if !r.bytes()?.is_empty() {
                    r.int()?;
                    r.bytes()?;
                }
                Ok(Value::Other)
            }
            _ => match self.types.get(&id) {
                None => Err(GobError::UnknownType(id)),
                Some(WireType::Opaque) => r.bytes().map(|_| Value::Bytes),
                Some(WireType::Struct { fields }) => {
                    let mut values = Vec::new();
                    r.fields(|r, i| {
                        let (name, fid) = usize::try_from(i)
                            .ok()
                            .and_then(|i| fields.get(i))
                            .ok_or(GobError::Malformed("field index out of range"))?;
                        let v = self.field(r, *fid, depth + 1)?;
                        values.push((name.clone(), v));
                        Ok(())
                    })?;
                    Ok(Value::Struct(values))
                }
                Some(WireType::Array { elem } | WireType::Slice { elem }) => {
                    let n = self.count(r)?;
                    for _ in 0..n {
                        self.field(r, *elem, depth + 1)?;
                    }
                    Ok(Value::Other)
                }
                Some(WireType::Map { key, elem }) => {
                    let n = self.count(r)?;
                    for _ in 0..n {
                        self.field(r, *key, depth + 1)?;
                        self.field(r, *elem, depth + 1)?;
                    }
                    Ok(Value::Other)
                }
            },
        }
    }

    /// An element count; every element takes at least one byte, so a larger count is a lie.
    fn count(&self, r: &mut Reader<'_>) -> Result<u64, GobError> {
        let n = r.uint()?;
        if n > r.buf.len() as u64 {
            return Err(GobError::Truncated);
        }
        Ok(n)
    }
}

fn stat_message(value: Value) -> Result<GobStat, GobError> {
    let Value::Struct(fields) = value else {
        return Err(GobError::Malformed("StatMessage is not a struct"));
    };
    let mut out = GobStat::default();
    let mut has_key = false;
    for (name, v) in fields {
        match (name.as_str(), v) {
            ("Key", Value::Str(key)) => {
                let (ns, n) = key.split_once('/').ok_or(GobError::Field {
                    field: "Key",
                    message: "not namespace/name",
                })?;
                (out.namespace, out.name) = (ns.to_owned(), n.to_owned());
                has_key = true;
            }
            // v0.8+ `types.NamespacedName`.
            ("Key", Value::Struct(parts)) => {
                for (part, v) in parts {
                    match (part.as_str(), v) {
                        ("Namespace", Value::Str(s)) => out.namespace = s,
                        ("Name", Value::Str(s)) => out.name = s,
                        _ => {}
                    }
                }
                has_key = true;
            }
            ("Key", _) => {
                return Err(GobError::Field {
                    field: "Key",
                    message: "wrong type",
                });
            }
            ("Stat", Value::Struct(stat)) => fill_stat(&mut out, stat)?,
            ("Stat", _) => {
                return Err(GobError::Field {
                    field: "Stat",
                    message: "wrong type",
                });
            }
            _ => {}
        }
    }
    if !has_key || out.namespace.is_empty() || out.name.is_empty() {
        return Err(GobError::Field {
            field: "Key",
            message: "missing namespace or name",
        });
    }
    Ok(out)
}

fn fill_stat(out: &mut GobStat, stat: Vec<(String, Value)>) -> Result<(), GobError> {
    for (name, v) in stat {
        let slot = match name.as_str() {
            "PodName" => {
                let Value::Str(s) = v else {
                    return Err(GobError::Field {
                        field: "Stat.PodName",
                        message: "wrong type",
                    });
                };
                out.pod_name = s;
                continue;
            }
            "AverageConcurrentRequests" => &mut out.average_concurrent_requests,
            "AverageProxiedConcurrentRequests" => &mut out.average_proxied_concurrent_requests,
            "RequestCount" => &mut out.request_count,
            "ProxiedRequestCount" => &mut out.proxied_request_count,
            _ => continue,
        };
        *slot = match v {
            Value::Float(f) if f.is_finite() => f,
            Value::Int(i) => i as f64,
            Value::Uint(u) => u as f64,
            _ => {
                return Err(GobError::Field {
                    field: "Stat",
                    message: "a figure is not a finite number",
                });
            }
        };
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
