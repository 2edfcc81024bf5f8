//! Who holds a partition in the scale-out buckets: the [`Claim`] an
//! instance writes as the value of its owner and lease keys (its data
//! directory's identity, name, host, path and place, and a per-process
//! session), its text form, and the key of a partition ([`lease_key`]).
//!
//! Limits: a claim is at most [`CLAIM_BYTES_MAX`] bytes; values read back
//! longer than that, not UTF-8 or without `weir-claim 1` are not claims
//! (shown as what they hold, never trusted).
//! Must never: take a claim with an unknown place for this directory on
//! this machine (that would let a copy take over a live lease).

use bytes::Bytes;

/// Largest encoded claim.
pub const CLAIM_BYTES_MAX: usize = 1024;

/// Who claims a partition: an instance, by its data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The data directory's identity (hex).
    pub data_dir_id: String,
    /// The instance's name (default: the host name).
    pub name: String,
    /// The host.
    pub host: String,
    /// The data directory's path on that host.
    pub dir: String,
    /// Where the data directory is, as the machine knows it
    /// ([`Claim::place_of`]: machine id, device and inode): two claims
    /// with the same place are the same directory on the same machine,
    /// whatever the host names and paths say (containers share names;
    /// a copied directory keeps its path). Empty when unknown.
    pub place: String,
    /// Random per process (`Claim::new_session`): tells this process's own
    /// lease value from any other's, so a renewal whose acknowledgement
    /// was lost is recognised, not taken for another writer.
    pub session: String,
}

impl Claim {
    /// The claim's bytes: `weir-claim 1` and one `key=value` line each.
    pub fn encode(&self) -> Bytes {
        let clean = |s: &str| s.replace(['\n', '\r'], " ");
        Bytes::from(format!(
            "weir-claim 1\ndata_dir_id={}\nname={}\nhost={}\ndir={}\nplace={}\nsession={}\n",
            clean(&self.data_dir_id),
            clean(&self.name),
            clean(&self.host),
            clean(&self.dir),
            clean(&self.place),
            clean(&self.session)
        ))
    }

    /// A claim read back; `None` if it is not one (written by hand?).
    pub fn decode(b: &[u8]) -> Option<Claim> {
        if b.len() > CLAIM_BYTES_MAX {
            return None;
        }
        let text = std::str::from_utf8(b).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "weir-claim 1" {
            return None;
        }
        let mut c = Claim {
            data_dir_id: String::new(),
            name: String::new(),
            host: String::new(),
            dir: String::new(),
            place: String::new(),
            session: String::new(),
        };
        for l in lines {
            let (k, v) = l.split_once('=')?;
            let slot = match k {
                "data_dir_id" => &mut c.data_dir_id,
                "name" => &mut c.name,
                "host" => &mut c.host,
                "dir" => &mut c.dir,
                "place" => &mut c.place,
                "session" => &mut c.session,
                _ => continue,
            };
            *slot = v.to_string();
        }
        (!c.data_dir_id.is_empty()).then_some(c)
    }

    /// A fresh random session id for a claim of this process.
    pub fn new_session() -> String {
        crate::checkpoint::DataDirId::random().to_string()
    }

    /// Whether `other` was written for the same data directory on the
    /// same machine (by an earlier process: the directory lock this
    /// process holds proves that one is gone). An unknown place is never
    /// the same.
    pub(super) fn same_place(&self, other: &Claim) -> bool {
        self.data_dir_id == other.data_dir_id && !self.place.is_empty() && self.place == other.place
    }

    /// The place of directory `dir` on this machine:
    /// `<machine id>:<device>:<inode>`, or empty if any part is unknown.
    /// The machine id is `/etc/machine-id` (stable across reboots), else
    /// the kernel's boot id (a takeover after a reboot then waits out the
    /// lease).
    pub fn place_of(dir: &std::path::Path) -> String {
        use std::os::unix::fs::MetadataExt;
        let id = ["/etc/machine-id", "/proc/sys/kernel/random/boot_id"]
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.trim().to_string())
            .find(|s| !s.is_empty());
        match (id, std::fs::metadata(dir)) {
            (Some(id), Ok(m)) => format!("{id}:{}:{}", m.dev(), m.ino()),
            _ => String::new(),
        }
    }
}

/// The key of partition `stream` of source `source_id`: characters a key
/// may not hold are written `=XX` (hex), so distinct names stay distinct.
pub fn lease_key(source_id: &str, stream: &str) -> String {
    let esc = |s: &str| {
        let mut o = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
                o.push(b as char);
            } else {
                o.push_str(&format!("={b:02X}"));
            }
        }
        o
    };
    format!("{}.{}", esc(source_id), esc(stream))
}


/// A value that is not a claim, shown as what it holds.
pub(super) fn unknown_claim(value: &[u8]) -> Claim {
    let shown = String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned();
    Claim {
        data_dir_id: format!("(not a weir claim: {shown:?})"),
        name: "(unknown)".into(),
        host: "(unknown)".into(),
        dir: "(unknown)".into(),
        place: String::new(),
        session: String::new(),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::source) fn claim(id: &str) -> Claim {
        Claim {
            data_dir_id: id.into(),
            name: "a".into(),
            host: "h".into(),
            dir: "/d".into(),
            place: "m:1:2".into(),
            session: "s1".into(),
        }
    }

    #[test]
    fn claims_round_trip_and_reject_other_values() {
        let c = claim("00ff");
        assert_eq!(Claim::decode(&c.encode()), Some(c));
        assert_eq!(Claim::decode(b"something else"), None);
        assert_eq!(Claim::decode(&vec![b'x'; CLAIM_BYTES_MAX + 1]), None);
        let mut nl = claim("1");
        nl.name = "two\nlines".into();
        assert_eq!(Claim::decode(&nl.encode()).map(|c| c.name), Some("two lines".into()));
        // A claim from before places: decoded, its place unknown.
        let old = b"weir-claim 1\ndata_dir_id=ab\nname=n\nhost=h\ndir=/d\nsession=s\n";
        let c = Claim::decode(old).expect("an older claim");
        assert_eq!((c.data_dir_id.as_str(), c.place.as_str()), ("ab", ""));
    }

    #[test]
    fn the_same_place_is_the_same_directory_on_the_same_machine() {
        let me = claim("1");
        assert!(me.same_place(&claim("1")));
        let mut copy = claim("1");
        copy.place = "m:1:3".into(); // another inode: a copy
        assert!(!me.same_place(&copy));
        let mut other_host_same_names = claim("1");
        other_host_same_names.place = "n:1:2".into();
        assert!(!me.same_place(&other_host_same_names));
        let mut unknown = claim("1");
        unknown.place.clear();
        assert!(!unknown.same_place(&unknown.clone()));
        assert!(!me.same_place(&claim("2")));
    }

    #[test]
    fn a_directory_has_a_place_and_two_directories_differ() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let pa = Claim::place_of(a.path());
        assert!(!pa.is_empty());
        assert_eq!(pa, Claim::place_of(a.path()));
        assert_ne!(pa, Claim::place_of(b.path()));
        assert_eq!(Claim::place_of(&a.path().join("absent")), "");
    }

    #[test]
    fn keys_escape_what_a_key_may_not_hold() {
        assert_eq!(lease_key("events", "EV0"), "events.EV0");
        assert_eq!(lease_key("a.b", "S@1"), "a=2Eb.S=401");
        assert_ne!(lease_key("a.b", "c"), lease_key("a", "b.c"));
    }
}
