//! Parsing of the `IFNAME:ADDRESS[/PREFIX]` arguments of `add-address` and `remove-address`.
//!
//! The string is split at its first `:`, because an interface name can never contain one while an
//! IPv6 address always does (`eth0:2001:db8::20/64`). Addresses are parsed strictly by the standard
//! library, unlike the original's lenient `inet_aton`, so `10.1` or `010.0.0.1` are refused instead of
//! being read as some other address. Only the syntax is checked here; whether an address may be
//! pooled at all (not loopback, multicast or unspecified) is the daemon's decision.

use std::net::IpAddr;

use thiserror::Error;

/// The longest interface name Linux accepts (`IFNAMSIZ` minus the terminating NUL).
pub const MAX_INTERFACE_NAME_BYTES: usize = 15;

/// The form `add-address` expects, quoted in its error messages.
pub const ADD_FORM: &str = "IFNAME:ADDRESS[/PREFIX]";

/// The form `remove-address` expects, quoted in its error messages.
pub const REMOVE_FORM: &str = "IFNAME:ADDRESS";

/// An address argument of `add-address`: an interface, an address and an optional prefix length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressSpec {
    /// The interface the address is installed on.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
    /// The prefix length, when one was given; it is within range for the address family.
    pub prefix_len: Option<u8>,
}

/// An address argument of `remove-address`: the pool entry is named by interface and address only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolEntry {
    /// The interface named when the address was added.
    pub interface: String,
    /// The address.
    pub address: IpAddr,
}

/// Why an address argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResourceError {
    /// There was no `:`, or nothing after it.
    #[error("invalid resource format, expected {expected}")]
    Format {
        /// The form the command expects.
        expected: &'static str,
    },
    /// The interface name cannot exist on Linux.
    #[error("invalid interface name {name:?}: {problem}")]
    InterfaceName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        problem: InterfaceNameProblem,
    },
    /// The address part is not an IP address.
    #[error("not a valid IP address: {0}")]
    Address(String),
    /// The prefix part is not a decimal number.
    #[error("not a valid prefix length: {0:?}")]
    Prefix(String),
    /// The prefix is longer than the address.
    #[error("prefix length {prefix} is out of range for an {family} address")]
    PrefixOutOfRange {
        /// The prefix as given.
        prefix: String,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// `remove-address` was given a prefix length.
    #[error("remove-address takes {REMOVE_FORM}, without a prefix length")]
    PrefixNotAccepted,
}

/// What makes an interface name impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InterfaceNameProblem {
    /// The name is empty.
    #[error("it is empty")]
    Empty,
    /// The name is longer than [`MAX_INTERFACE_NAME_BYTES`].
    #[error("it is longer than {MAX_INTERFACE_NAME_BYTES} bytes")]
    TooLong,
    /// The name contains `/`, which the kernel refuses because names appear in sysfs paths.
    #[error("it contains '/'")]
    Slash,
    /// The name contains whitespace, which the kernel refuses.
    #[error("it contains whitespace")]
    Whitespace,
    /// The name contains a NUL byte, which would cut it short.
    #[error("it contains a NUL byte")]
    Nul,
}

/// Parses the argument of `add-address`.
pub fn parse_add_argument(argument: &str) -> Result<AddressSpec, ResourceError> {
    let (interface, address, prefix) = split(argument, ADD_FORM)?;
    let prefix_len = prefix.map(|prefix| parse_prefix(prefix, address)).transpose()?;
    Ok(AddressSpec { interface, address, prefix_len })
}

/// Parses the argument of `remove-address`, which names a pool entry and so takes no prefix.
pub fn parse_remove_argument(argument: &str) -> Result<PoolEntry, ResourceError> {
    match split(argument, REMOVE_FORM)? {
        (interface, address, None) => Ok(PoolEntry { interface, address }),
        (_, _, Some(_)) => Err(ResourceError::PrefixNotAccepted),
    }
}

/// Checks an interface name against the kernel's rules (`dev_valid_name`), plus `:`, which would
/// make the `IFNAME:ADDRESS` form ambiguous.
pub fn validate_interface_name(name: &str) -> Result<(), InterfaceNameProblem> {
    if name.is_empty() {
        Err(InterfaceNameProblem::Empty)
    } else if name.len() > MAX_INTERFACE_NAME_BYTES {
        Err(InterfaceNameProblem::TooLong)
    } else if name.contains('/') {
        Err(InterfaceNameProblem::Slash)
    } else if name.contains('\0') {
        Err(InterfaceNameProblem::Nul)
    } else if name.chars().any(char::is_whitespace) {
        Err(InterfaceNameProblem::Whitespace)
    } else {
        Ok(())
    }
}

/// Splits `IFNAME:ADDRESS[/PREFIX]` and checks the interface and the address; the prefix is returned
/// unparsed because only `add-address` accepts one.
fn split<'a>(
    argument: &'a str,
    expected: &'static str,
) -> Result<(String, IpAddr, Option<&'a str>), ResourceError> {
    let Some((interface, rest)) = argument.split_once(':') else {
        return Err(ResourceError::Format { expected });
    };
    let (address, prefix) = match rest.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (rest, None),
    };
    if address.is_empty() {
        return Err(ResourceError::Format { expected });
    }
    validate_interface_name(interface)
        .map_err(|problem| ResourceError::InterfaceName { name: interface.to_owned(), problem })?;
    let address: IpAddr = address.parse().map_err(|_| ResourceError::Address(address.to_owned()))?;
    Ok((interface.to_owned(), address, prefix))
}

fn parse_prefix(prefix: &str, address: IpAddr) -> Result<u8, ResourceError> {
    // `u8::from_str` would also take a leading '+', which no prefix notation uses.
    if prefix.is_empty() || !prefix.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ResourceError::Prefix(prefix.to_owned()));
    }
    let (family, max) = match address {
        IpAddr::V4(_) => ("IPv4", 32),
        IpAddr::V6(_) => ("IPv6", 128),
    };
    // A string of digits too long for u8 is out of range just like 33 is.
    match prefix.parse::<u8>() {
        Ok(prefix_len) if prefix_len <= max => Ok(prefix_len),
        _ => Err(ResourceError::PrefixOutOfRange { prefix: prefix.to_owned(), family }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(interface: &str, address: &str, prefix_len: Option<u8>) -> AddressSpec {
        AddressSpec { interface: interface.to_owned(), address: address.parse().unwrap(), prefix_len }
    }

    #[test]
    fn add_argument_accepts_ipv4_and_ipv6_forms() {
        let cases = [
            ("eth0:10.0.0.20", spec("eth0", "10.0.0.20", None)),
            ("eth0:10.0.0.20/24", spec("eth0", "10.0.0.20", Some(24))),
            ("eth0:10.0.0.20/0", spec("eth0", "10.0.0.20", Some(0))),
            ("eth0:10.0.0.20/32", spec("eth0", "10.0.0.20", Some(32))),
            ("eth0:2001:db8::20", spec("eth0", "2001:db8::20", None)),
            ("eth0:2001:db8::20/64", spec("eth0", "2001:db8::20", Some(64))),
            ("eth0:2001:db8::20/128", spec("eth0", "2001:db8::20", Some(128))),
            ("eth0:::ffff:10.0.0.1", spec("eth0", "::ffff:10.0.0.1", None)),
            ("bond0.100:192.0.2.7/31", spec("bond0.100", "192.0.2.7", Some(31))),
            ("a:10.0.0.1", spec("a", "10.0.0.1", None)),
            ("abcdefghijklmno:10.0.0.1", spec("abcdefghijklmno", "10.0.0.1", None)),
            ("veth-ä:10.0.0.1", spec("veth-ä", "10.0.0.1", None)),
        ];
        for (argument, expected) in cases {
            assert_eq!(parse_add_argument(argument), Ok(expected), "{argument}");
        }
    }

    #[test]
    fn add_argument_errors_have_clear_messages() {
        let cases = [
            ("eth0", "invalid resource format, expected IFNAME:ADDRESS[/PREFIX]"),
            ("", "invalid resource format, expected IFNAME:ADDRESS[/PREFIX]"),
            ("eth0:", "invalid resource format, expected IFNAME:ADDRESS[/PREFIX]"),
            ("eth0:/24", "invalid resource format, expected IFNAME:ADDRESS[/PREFIX]"),
            ("10.0.0.20", "invalid resource format, expected IFNAME:ADDRESS[/PREFIX]"),
            (":10.0.0.20", "invalid interface name \"\": it is empty"),
            (
                "abcdefghijklmnop:10.0.0.1",
                "invalid interface name \"abcdefghijklmnop\": it is longer than 15 bytes",
            ),
            ("vethäääääää:10.0.0.1", "invalid interface name \"vethäääääää\": it is longer than 15 bytes"),
            ("a/b:10.0.0.1", "invalid interface name \"a/b\": it contains '/'"),
            ("eth 0:10.0.0.1", "invalid interface name \"eth 0\": it contains whitespace"),
            ("eth\t0:10.0.0.1", "invalid interface name \"eth\\t0\": it contains whitespace"),
            ("eth\u{0}:10.0.0.1", "invalid interface name \"eth\\0\": it contains a NUL byte"),
            ("eth0:10.0.0.300", "not a valid IP address: 10.0.0.300"),
            ("eth0:10.1", "not a valid IP address: 10.1"),
            ("eth0:010.0.0.1", "not a valid IP address: 010.0.0.1"),
            ("eth0:localhost", "not a valid IP address: localhost"),
            ("eth0: 10.0.0.1", "not a valid IP address:  10.0.0.1"),
            ("eth0:[2001:db8::1]", "not a valid IP address: [2001:db8::1]"),
            ("eth0:fe80::1%eth0", "not a valid IP address: fe80::1%eth0"),
            ("eth0:2001:db8::g", "not a valid IP address: 2001:db8::g"),
            ("eth0:10.0.0.20/", "not a valid prefix length: \"\""),
            ("eth0:10.0.0.20/+24", "not a valid prefix length: \"+24\""),
            ("eth0:10.0.0.20/-1", "not a valid prefix length: \"-1\""),
            ("eth0:10.0.0.20/2x", "not a valid prefix length: \"2x\""),
            ("eth0:10.0.0.20/24/24", "not a valid prefix length: \"24/24\""),
            ("eth0:10.0.0.20/255.255.255.0", "not a valid prefix length: \"255.255.255.0\""),
            ("eth0:10.0.0.20/33", "prefix length 33 is out of range for an IPv4 address"),
            ("eth0:10.0.0.20/256", "prefix length 256 is out of range for an IPv4 address"),
            (
                "eth0:10.0.0.20/99999999999999999999",
                "prefix length 99999999999999999999 is out of range for an IPv4 address",
            ),
            ("eth0:2001:db8::20/129", "prefix length 129 is out of range for an IPv6 address"),
        ];
        for (argument, message) in cases {
            let error = parse_add_argument(argument).expect_err(argument);
            assert_eq!(error.to_string(), message, "{argument:?}");
        }
    }

    #[test]
    fn remove_argument_names_an_entry_without_a_prefix() {
        let entry = parse_remove_argument("eth0:2001:db8::20").unwrap();
        assert_eq!(
            entry,
            PoolEntry { interface: "eth0".to_owned(), address: "2001:db8::20".parse().unwrap() }
        );
        let cases = [
            ("eth0:10.0.0.20/32", "remove-address takes IFNAME:ADDRESS, without a prefix length"),
            ("eth0", "invalid resource format, expected IFNAME:ADDRESS"),
            ("eth0:10.0.0.256", "not a valid IP address: 10.0.0.256"),
            ("a/b:10.0.0.1", "invalid interface name \"a/b\": it contains '/'"),
        ];
        for (argument, message) in cases {
            let error = parse_remove_argument(argument).expect_err(argument);
            assert_eq!(error.to_string(), message, "{argument:?}");
        }
    }
}
