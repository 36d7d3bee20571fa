//! Least privilege: after the capture is open (and the metrics socket
//! bound), the agent can drop to an unprivileged user and group
//! (RUN_AS_USER, RUN_AS_GROUP). It happens before any other thread starts, so the whole process
//! changes identity; supplementary groups are cleared.
//!
//! What it does not do: manage capabilities. Run unprivileged from the
//! start with only CAP_NET_RAW instead (`setcap cap_net_raw+ep`, or systemd's
//! `AmbientCapabilities=CAP_NET_RAW`; see docs/deployment.md).

use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};

/// Who to become after start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Resolve RUN_AS_USER and RUN_AS_GROUP (names or numbers). The group defaults to the user's
/// primary group.
pub fn resolve(user: &str, group: &str) -> Result<Option<RunAs>, (&'static str, String)> {
    if user.is_empty() {
        return match group {
            "" => Ok(None),
            _ => Err((
                "RUN_AS_GROUP",
                "set RUN_AS_USER too; the agent changes its group only with its user".into(),
            )),
        };
    }
    let found = match user.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(user),
    }
    .map_err(|e| ("RUN_AS_USER", format!("cannot look up: {e}")))?
    .ok_or(("RUN_AS_USER", "no such user".to_string()))?;
    let gid = if group.is_empty() {
        found.gid
    } else {
        match group.parse::<u32>() {
            Ok(gid) => Group::from_gid(Gid::from_raw(gid)),
            Err(_) => Group::from_name(group),
        }
        .map_err(|e| ("RUN_AS_GROUP", format!("cannot look up: {e}")))?
        .ok_or(("RUN_AS_GROUP", "no such group".to_string()))?
        .gid
    };
    Ok(Some(RunAs {
        user: found.name,
        uid: found.uid,
        gid,
    }))
}

/// Become `run_as` for good. Call while the process has one thread.
pub fn drop_to(run_as: &RunAs) -> Result<(), String> {
    let fail = |what: &str, e: nix::Error| format!("cannot drop privileges to {} ({what}): {e}", run_as.user);
    if Uid::current() == run_as.uid && Gid::current() == run_as.gid {
        return Ok(());
    }
    setgroups(&[run_as.gid]).map_err(|e| fail("supplementary groups", e))?;
    setgid(run_as.gid).map_err(|e| fail("group", e))?;
    setuid(run_as.uid).map_err(|e| fail("user", e))?;
    Ok(())
}
