//! Linux side effects for fechter: addresses over netlink, gratuitous ARP and NA, gateway pings
