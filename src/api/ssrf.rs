//! Where webhooks may go: a callback URL is chosen by whoever holds an API
//! key, so without a guard pound would POST to its own loopback services,
//! the cloud metadata endpoint (169.254.169.254) or anything on the private
//! network, and report back whether they answered (server-side request
//! forgery).
//!
//! The guard is applied twice. At request time [`check_url`] refuses what is
//! visibly bad (a literal forbidden address in any notation the URL parser
//! accepts, `localhost`, credentials in the URL). At delivery time
//! [`GuardedResolver`] resolves host names itself and hands the HTTP client
//! only the addresses that passed [`TargetPolicy::check`], so the client
//! connects to exactly what was checked: a name that resolved to a public
//! address when the request was made and to 127.0.0.1 now (DNS rebinding)
//! is still refused. Literal addresses never reach a resolver, so the
//! delivery checks them with [`TargetPolicy::check_host`] before sending.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Deserialize;

/// Why an address is not a public unicast destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// 127.0.0.0/8, ::1, and the names `localhost` and `*.localhost`.
    Loopback,
    /// RFC 1918, CGNAT 100.64.0.0/10, ULA fc00::/7, site-local fec0::/10.
    Private,
    /// 169.254.0.0/16 (cloud metadata lives here), fe80::/10.
    LinkLocal,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8 and `::` (Linux connects 0.0.0.0 to the local host).
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// Documentation, benchmarking, protocol-assignment and reserved ranges,
    /// and IPv6 transition prefixes that hide an IPv4 address not checked here.
    Reserved,
}

impl Forbidden {
    /// The words used in `last_error` ("refused: private address").
    pub fn as_str(self) -> &'static str {
        match self {
            Forbidden::Loopback => "loopback address",
            Forbidden::Private => "private address",
            Forbidden::LinkLocal => "link-local address",
            Forbidden::Multicast => "multicast address",
            Forbidden::Unspecified => "unspecified address",
            Forbidden::Broadcast => "broadcast address",
            Forbidden::Reserved => "reserved address",
        }
    }

    /// Never a sensible unicast destination, whatever the operator allows.
    fn always_refused(self) -> bool {
        matches!(self, Forbidden::Multicast | Forbidden::Unspecified | Forbidden::Broadcast)
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of `ip` when it is not a global unicast address.
pub fn classify(ip: IpAddr) -> Option<Forbidden> {
    match canonical(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) IPv6
/// addresses reach the IPv4 address inside them, so they are judged (and
/// matched against allow-lists) as that address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            let compatible = segments[..6] == [0; 6] && v6.to_ipv4().is_some_and(|v4| u32::from(v4) > 1);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None if compatible => IpAddr::V4(v6.to_ipv4().expect("checked above")),
                None => ip,
            }
        }
        v4 => v4,
    }
}

fn in_v4(ip: Ipv4Addr, network: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(network)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<Forbidden> {
    use Forbidden::*;
    const RANGES: [([u8; 4], u32, Forbidden); 17] = [
        ([0, 0, 0, 0], 8, Unspecified),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, Private),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Reserved),
        ([192, 31, 196, 0], 24, Reserved),
        ([192, 52, 193, 0], 24, Reserved),
        ([192, 88, 99, 0], 24, Reserved),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Reserved),
        ([198, 51, 100, 0], 24, Reserved),
        ([203, 0, 113, 0], 24, Reserved),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
    ];
    if ip == Ipv4Addr::BROADCAST {
        return Some(Broadcast);
    }
    RANGES.iter().find(|(network, prefix, _)| in_v4(ip, *network, *prefix)).map(|&(_, _, class)| class)
}

fn in_v6(ip: Ipv6Addr, network: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == network & mask
}

fn classify_v6(ip: Ipv6Addr) -> Option<Forbidden> {
    use Forbidden::*;
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    // Only 2000::/3 is global unicast; inside it, the ranges below are not
    // (NAT64, 6to4 and Teredo carry an IPv4 address pound would reach
    // through a gateway without having checked it).
    const SPECIAL: [(u128, u32, Forbidden); 7] = [
        (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96, Reserved),
        (0x0064_ff9b_0001_0000_0000_0000_0000_0000, 48, Reserved),
        (0x2001_0000_0000_0000_0000_0000_0000_0000, 32, Reserved),
        (0x2001_0002_0000_0000_0000_0000_0000_0000, 48, Reserved),
        (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32, Reserved),
        (0x2002_0000_0000_0000_0000_0000_0000_0000, 16, Reserved),
        (0x3fff_0000_0000_0000_0000_0000_0000_0000, 20, Reserved),
    ];
    const BY_PREFIX: [(u128, u32, Forbidden); 4] = [
        (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7, Private),
        (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10, LinkLocal),
        (0xfec0_0000_0000_0000_0000_0000_0000_0000, 10, Private),
        (0xff00_0000_0000_0000_0000_0000_0000_0000, 8, Multicast),
    ];
    if let Some(&(_, _, class)) = SPECIAL.iter().chain(&BY_PREFIX).find(|(net, prefix, _)| in_v6(ip, *net, *prefix)) {
        return Some(class);
    }
    (!in_v6(ip, 0x2000_0000_0000_0000_0000_0000_0000_0000, 3)).then_some(Reserved)
}

/// An address block such as `10.1.0.0/16` or `fd00::/8` (a bare address is
/// a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u32,
}

impl Cidr {
    /// Whether `ip` (IPv4-mapped forms included) is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => in_v4(ip, network.octets(), self.prefix),
            (IpAddr::V6(network), IpAddr::V6(ip)) => in_v6(ip, u128::from(network), self.prefix),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let invalid = || format!("{text:?} is not an address block like \"10.1.0.0/16\" or \"fd00::/8\"");
        let (address, prefix) = text.trim().split_once('/').unwrap_or((text.trim(), ""));
        let network: IpAddr = address.parse().map_err(|_| invalid())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() { max } else { prefix.parse().map_err(|_| invalid())? };
        if prefix > max {
            return Err(invalid());
        }
        // `::ffff:10.0.0.0/104` is written as the IPv4 block it means.
        Ok(match (network, canonical(network)) {
            (IpAddr::V6(_), IpAddr::V4(v4)) if prefix >= 96 => Cidr { network: IpAddr::V4(v4), prefix: prefix - 96 },
            _ => Cidr { network, prefix },
        })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(text: String) -> Result<Cidr, String> {
        text.parse()
    }
}

/// Which webhook destinations are allowed. The default refuses every
/// address that is not global unicast.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetPolicy {
    /// Allow loopback, private, link-local and reserved addresses too
    /// (multicast, broadcast and unspecified stay refused).
    pub allow_private: bool,
    /// Blocks allowed even though they are not global.
    pub allow_cidrs: Vec<Cidr>,
}

impl TargetPolicy {
    /// Whether a webhook may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Forbidden> {
        let Some(class) = classify(ip) else { return Ok(()) };
        if class.always_refused() {
            return Err(class);
        }
        if self.allow_private || self.allow_cidrs.iter().any(|cidr| cidr.contains(ip)) {
            return Ok(());
        }
        Err(class)
    }

    /// Checks what can be judged from the URL's host alone: a literal
    /// address, or a name reserved for the local host (RFC 6761).
    pub fn check_host(&self, url: &Url) -> Result<(), Forbidden> {
        // The URL parser has already turned every IPv4 notation
        // (`2130706433`, `0x7f000001`, `127.1`) into dotted decimal.
        let Some(host) = url.host_str() else { return Err(Forbidden::Unspecified) };
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return self.check(ip);
        }
        // `localhost` names mean the loopback addresses, whatever DNS says
        // at the moment: judged as those, so an allow-list covers them too.
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return self
                .check(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .or_else(|_| self.check(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        }
        Ok(())
    }
}

/// Why a callback URL is refused when a verification is created.
pub fn check_url(url: &Url, policy: &TargetPolicy) -> Result<(), String> {
    // The URL is stored and shown with the record; credentials in it would
    // be too. Receivers authenticate pound by the signature instead.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (user:password@); verify the Pound-Signature instead".into());
    }
    policy.check_host(url).map_err(|class| format!("points at a {class}, which webhooks may not reach"))
}

/// A destination that resolved only to refused addresses.
#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refused(pub Forbidden);

/// A host name did not resolve.
#[derive(Debug, thiserror::Error)]
#[error("DNS failure: {0}")]
pub struct Unresolved(pub std::io::Error);

/// The webhook client's resolver: the system's, with every address that
/// [`TargetPolicy::check`] refuses removed; a name with nothing left is an
/// error ([`Refused`]) rather than a connection.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<TargetPolicy>,
}

impl GuardedResolver {
    pub fn new(policy: TargetPolicy) -> GuardedResolver {
        GuardedResolver { policy: Arc::new(policy) }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port on the addresses it gets.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await
                .map_err(|err| Box::new(Unresolved(err)) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match policy.check(address.ip()) {
                    Ok(()) => true,
                    Err(class) => {
                        refused.get_or_insert(class);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> = match refused {
                    Some(class) => Box::new(Refused(class)),
                    None => Box::new(Unresolved(std::io::ErrorKind::NotFound.into())),
                };
                return Err(error);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn every_notation_of_a_forbidden_address_is_refused_by_default() {
        let policy = TargetPolicy::default();
        for (text, class) in [
            ("http://127.0.0.1/", Forbidden::Loopback),
            ("http://[::1]/", Forbidden::Loopback),
            ("http://localhost:8080/", Forbidden::Loopback),
            ("http://LOCALHOST./", Forbidden::Loopback),
            ("http://api.localhost/", Forbidden::Loopback),
            ("http://2130706433/", Forbidden::Loopback),
            ("http://0x7f000001/", Forbidden::Loopback),
            ("http://0177.0.0.1/", Forbidden::Loopback),
            ("http://127.1/", Forbidden::Loopback),
            ("http://[::ffff:127.0.0.1]/", Forbidden::Loopback),
            ("http://[::ffff:7f00:1]/", Forbidden::Loopback),
            ("http://[::127.0.0.1]/", Forbidden::Loopback),
            ("http://0.0.0.0/", Forbidden::Unspecified),
            ("http://0/", Forbidden::Unspecified),
            ("http://[::]/", Forbidden::Unspecified),
            ("http://169.254.169.254/latest/meta-data/", Forbidden::LinkLocal),
            ("http://[fe80::1]/", Forbidden::LinkLocal),
            ("https://10.1.2.3/", Forbidden::Private),
            ("https://172.31.255.255/", Forbidden::Private),
            ("https://192.168.0.1/", Forbidden::Private),
            ("https://100.64.0.1/", Forbidden::Private),
            ("https://[fd12::1]/", Forbidden::Private),
            ("https://[::ffff:10.0.0.1]/", Forbidden::Private),
            ("https://224.0.0.1/", Forbidden::Multicast),
            ("https://[ff02::1]/", Forbidden::Multicast),
            ("https://255.255.255.255/", Forbidden::Broadcast),
            ("https://192.0.2.7/", Forbidden::Reserved),
            ("https://198.18.0.1/", Forbidden::Reserved),
            ("https://240.0.0.1/", Forbidden::Reserved),
            ("https://[2001:db8::1]/", Forbidden::Reserved),
            ("https://[64:ff9b::7f00:1]/", Forbidden::Reserved),
            ("https://[2002:7f00:1::]/", Forbidden::Reserved),
        ] {
            assert_eq!(policy.check_host(&url(text)), Err(class), "{text}");
            assert!(check_url(&url(text), &policy).is_err(), "{text}");
        }
    }

    #[test]
    fn global_addresses_and_names_pass() {
        let policy = TargetPolicy::default();
        for text in [
            "https://hooks.example.com/x",
            "https://8.8.8.8/",
            "https://[2606:4700::1111]/",
            "https://[::ffff:8.8.8.8]/",
            "https://100.128.0.1/",
            "https://172.32.0.1/",
        ] {
            assert_eq!(policy.check_host(&url(text)), Ok(()), "{text}");
        }
    }

    #[test]
    fn operators_can_allow_private_addresses_or_blocks() {
        let open = TargetPolicy { allow_private: true, allow_cidrs: Vec::new() };
        assert_eq!(open.check_host(&url("http://localhost/")), Ok(()));
        assert_eq!(open.check_host(&url("http://10.0.0.1/")), Ok(()));
        assert_eq!(open.check_host(&url("http://0.0.0.0/")), Err(Forbidden::Unspecified), "never a destination");
        assert_eq!(open.check_host(&url("http://224.0.0.1/")), Err(Forbidden::Multicast));

        let cidrs: Vec<Cidr> = ["10.1.0.0/16", "fd00::/8", "127.0.0.2"].iter().map(|c| c.parse().unwrap()).collect();
        let narrow = TargetPolicy { allow_private: false, allow_cidrs: cidrs };
        assert_eq!(narrow.check_host(&url("http://10.1.200.3/")), Ok(()));
        assert_eq!(narrow.check_host(&url("http://[::ffff:10.1.0.9]/")), Ok(()), "mapped form of an allowed address");
        assert_eq!(narrow.check_host(&url("http://10.2.0.1/")), Err(Forbidden::Private));
        assert_eq!(narrow.check_host(&url("http://[fd00::5]/")), Ok(()));
        assert_eq!(narrow.check_host(&url("http://127.0.0.2/")), Ok(()));
        assert_eq!(narrow.check_host(&url("http://127.0.0.1/")), Err(Forbidden::Loopback));
        assert_eq!(narrow.check_host(&url("http://localhost/")), Err(Forbidden::Loopback));
        let loopback = TargetPolicy { allow_private: false, allow_cidrs: vec!["::1".parse().unwrap()] };
        assert_eq!(loopback.check_host(&url("http://localhost/")), Ok(()), "an allowed loopback covers the name");
    }

    #[test]
    fn address_blocks_are_parsed_strictly() {
        assert_eq!("10.1.0.0/16".parse::<Cidr>().unwrap(), Cidr { network: "10.1.0.0".parse().unwrap(), prefix: 16 });
        assert_eq!("::ffff:10.0.0.0/104".parse::<Cidr>().unwrap(), "10.0.0.0/8".parse().unwrap());
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("8.8.8.8".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "example.com/8", "10.0.0.0/x", "10.0.0.0/-1"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_in_callback_urls_are_refused() {
        let policy = TargetPolicy::default();
        assert!(check_url(&url("https://user:pw@hooks.example.com/"), &policy).unwrap_err().contains("credentials"));
        assert!(check_url(&url("https://user@hooks.example.com/"), &policy).is_err());
        assert!(check_url(&url("https://hooks.example.com/?token=x"), &policy).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let guarded = GuardedResolver::new(TargetPolicy::default());
        let error = guarded.resolve(Name::from_str("localhost").unwrap()).await.err().expect("refused");
        assert_eq!(error.to_string(), "refused: loopback address");
        let open = GuardedResolver::new(TargetPolicy { allow_private: true, allow_cidrs: Vec::new() });
        let addresses: Vec<SocketAddr> = open.resolve(Name::from_str("localhost").unwrap()).await.unwrap().collect();
        assert!(!addresses.is_empty() && addresses.iter().all(|a| a.ip().is_loopback()), "{addresses:?}");
    }
}
