//! Bad input to `fechter` is refused with the right exit code and changes nothing.

use anyhow::ensure;

use crate::common::{add_pool, scenario, wait_for_spread};

/// `fechter`'s exit code for a usage error (clap's).
const USAGE: i32 = 2;
/// `fechter`'s exit code for a refused or failed command.
const FAILED: i32 = 1;

#[test]
fn bad_cli_input_is_refused_and_changes_nothing() {
    scenario("bad_cli_input_is_refused_and_changes_nothing", "badcli", 1, |lab| {
        lab.start_node(0, true)?;
        let pool = add_pool(lab, 0, 2)?;
        let holdings = wait_for_spread(lab, &pool, &[0], "the node to hold its pool")?;
        let status = lab.status(0)?;
        let (held, unknown) = (pool[0].to_string(), lab.vip(50).to_string());
        let fresh = lab.vip(60).to_string();
        let out_of_range = lab.vip(60).to_string().replace(".160", ".300");
        let long_name = "averyveryverylongname0";

        let add = |resource: String| vec!["add-address".to_owned(), resource];
        let remove = |resource: String| vec!["remove-address".to_owned(), resource];
        let cases: Vec<(Vec<String>, i32, &str)> = vec![
            (add(format!("eth0:{out_of_range}")), FAILED, "IPv4 octet out of range"),
            (add("eth0:198.18.1".to_owned()), FAILED, "IPv4 with three parts"),
            (add("eth0:198.018.1.7".to_owned()), FAILED, "IPv4 with a leading zero"),
            (add("eth0:198.18.1.7.9".to_owned()), FAILED, "IPv4 with five parts"),
            (add("eth0:2001:db8::zz".to_owned()), FAILED, "IPv6 with bad digits"),
            (add("eth0:2001:db8:::1".to_owned()), FAILED, "IPv6 with three colons"),
            (add("eth0:".to_owned()), FAILED, "no address"),
            (add(format!("eth0:{fresh}/33")), FAILED, "IPv4 prefix too long"),
            (add("eth0:2001:db8::7/129".to_owned()), FAILED, "IPv6 prefix too long"),
            (add(format!("eth0:{fresh}/-1")), FAILED, "negative prefix"),
            (add(format!("eth0:{fresh}/abc")), FAILED, "prefix not a number"),
            (add(format!("eth0:{fresh}/")), FAILED, "empty prefix"),
            (add(fresh.clone()), FAILED, "no interface"),
            (add(format!(":{fresh}")), FAILED, "empty interface name"),
            (add(format!("{long_name}:{fresh}")), FAILED, "interface name too long"),
            (add(format!("et/h0:{fresh}")), FAILED, "interface name with a slash"),
            (add(format!("eth 0:{fresh}")), FAILED, "interface name with a space"),
            (add("eth0:127.0.0.1".to_owned()), FAILED, "loopback address"),
            (add("eth0:224.0.0.5".to_owned()), FAILED, "multicast address"),
            (add("eth0:0.0.0.0".to_owned()), FAILED, "unspecified address"),
            (add(format!("eth0:{held}")), FAILED, "duplicate address"),
            (remove(format!("eth0:{unknown}")), FAILED, "removing an unknown address"),
            (remove(format!("eth1:{held}")), FAILED, "removing from the wrong interface"),
            (remove(format!("eth0:{held}/32")), FAILED, "removing with a prefix"),
            (remove("eth0:not-an-address".to_owned()), FAILED, "removing a malformed address"),
            (vec!["frobnicate".to_owned()], USAGE, "unknown command"),
            (vec![], USAGE, "no command"),
            (vec!["add-address".to_owned()], USAGE, "add-address without an argument"),
            (vec!["up".to_owned(), "now".to_owned()], USAGE, "up with an argument"),
            (vec!["status".to_owned(), "--bogus".to_owned()], USAGE, "unknown option"),
        ];
        for (args, code, what) in &cases {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = lab.cli(0, &args)?;
            ensure!(
                output.code == Some(*code),
                "{what}: `fechter {}` exited {:?}, not {code}; stderr {:?}",
                args.join(" "),
                output.code,
                output.stderr
            );
            ensure!(!output.stderr.trim().is_empty(), "{what}: no message on stderr");
            ensure!(output.stdout.is_empty(), "{what}: printed {:?} on stdout", output.stdout);
        }

        // A daemon that is not running: the error names the socket it tried.
        let missing = lab.dir().join("no-daemon.sock");
        for args in [&["status"][..], &["up"], &["add-address", "eth0:198.18.0.99"]] {
            let output = lab.cli_with_socket(&missing, args)?;
            ensure!(
                output.code == Some(FAILED),
                "`fechter {}` without a daemon exited {:?}",
                args.join(" "),
                output.code
            );
            ensure!(
                output.stderr.contains(&missing.display().to_string()),
                "the error does not name the socket: {:?}",
                output.stderr
            );
        }

        ensure!(lab.status(0)? == status, "the status changed: {:?}", lab.status(0)?);
        ensure!(lab.holdings()? == holdings, "the interfaces changed: {:?}", lab.holdings()?);
        ensure!(lab.info(0)?.local.admin.as_deref() == Some("up"), "the admin state changed");
        Ok(())
    });
}
