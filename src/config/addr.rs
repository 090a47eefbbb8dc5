//! Socket addresses in the file: an IP address and a port, with a hint when it is not one.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, de::Error as _};

/// `listen.*`.
pub(super) fn one<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse(&String::deserialize(d)?).map_err(D::Error::custom)
}

/// `listen.admin`, absent meaning the mode's default.
pub(super) fn optional<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|s| parse(&s).map_err(D::Error::custom))
        .transpose()
}

/// `revisions[].endpoints`.
pub(super) fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| parse(s).map_err(D::Error::custom))
        .collect()
}

/// Host names are not resolved (a name could resolve differently at every reload, or not at
/// all at start-up), so a name gets a message saying what to write instead.
fn parse(text: &str) -> Result<SocketAddr, String> {
    let s = text.trim();
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    if s.parse::<IpAddr>().is_ok() {
        return Err(format!("`{s}` has no port: write it as `{s}:PORT`"));
    }
    let example = match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            if host.eq_ignore_ascii_case("localhost") {
                return Err(format!(
                    "`{s}` names a host, not an IP address: use an IP address such as \
                     127.0.0.1:{port} (host names are not resolved)"
                ));
            }
            format!("127.0.0.1:{port}")
        }
        _ => "127.0.0.1:8012".to_string(),
    };
    Err(format!(
        "`{s}` is not an IP address and port: use an IP address such as {example} or [::1]:{} \
         (host names are not resolved)",
        example.rsplit_once(':').map_or("8012", |(_, p)| p)
    ))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn addresses_parse_and_names_get_a_hint() {
        assert_eq!(parse("127.0.0.1:8012").unwrap().port(), 8012);
        assert_eq!(parse("[::1]:0").unwrap().port(), 0);
        assert_eq!(
            parse("localhost:8012").unwrap_err(),
            "`localhost:8012` names a host, not an IP address: use an IP address such as \
             127.0.0.1:8012 (host names are not resolved)"
        );
        assert_eq!(
            parse("10.0.0.1").unwrap_err(),
            "`10.0.0.1` has no port: write it as `10.0.0.1:PORT`"
        );
        assert!(
            parse("api.example.com:443")
                .unwrap_err()
                .contains("such as 127.0.0.1:443 or [::1]:443")
        );
        assert!(parse("").unwrap_err().contains("such as 127.0.0.1:8012"));
    }
}
