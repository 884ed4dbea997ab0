//! Retention in the bucket: the local rules (`backup::retention`'s days and
//! weeks for backups; segments ending at or before the oldest kept backup's
//! head go), applied to what the bucket holds. Conservative on both sides: an
//! object still in `backup.dir` is never deleted remotely, and a segment is
//! deleted only once a kept remote backup covers it.
use super::target::RemoteObject;
use super::{Kind, kind, segment};
use crate::lifecycle::backup::retention::{self as local, Keep};
use crate::lifecycle::backup::{BackupInfo, Manifest};
use crate::timestamp::Timestamp;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The remote backups (by manifest name) that `manifests` describe, oldest
/// first. A manifest is only believed about its own backup: one naming a
/// sealed file of another stem (written by someone else) is left out, so it
/// can neither hide a backup nor have others deleted.
pub fn backups(manifests: &HashMap<String, Manifest>) -> Vec<(String, BackupInfo)> {
    let own = |name: &str, m: &Manifest| {
        kind(&m.file) == Some(Kind::Backup)
            && m.file.ends_with(".sealed")
            && name.strip_suffix(".manifest.json") == m.file.strip_suffix(".sealed")
    };
    let mut out: Vec<(String, BackupInfo)> = manifests
        .iter()
        .filter(|(name, m)| own(name, m))
        .map(|(name, m)| (name.clone(), BackupInfo { path: m.file.clone().into(), manifest: m.clone() }))
        .collect();
    out.sort_by_key(|(_, b)| (b.manifest.created, b.manifest.head_seq));
    out
}

/// The remote objects to delete, in a safe order: each dropped backup's
/// manifest first (so a half-deleted backup is not listed), then its other
/// files, then the segments no kept backup needs.
pub fn plan(
    remote: &BTreeMap<String, RemoteObject>,
    manifests: &HashMap<String, Manifest>,
    local: &BTreeSet<String>,
    keep: Keep,
    window_start: Option<Timestamp>,
) -> Vec<String> {
    let listed = backups(manifests);
    let infos: Vec<BackupInfo> = listed.iter().map(|(_, b)| b.clone()).collect();
    let kept = local::plan(&infos, keep, window_start);
    let mut out = vec![];
    for (i, (manifest, info)) in listed.iter().enumerate() {
        if kept.contains(&i) || local.contains(manifest) {
            continue;
        }
        let stem = format!("{}.", info.manifest.file.trim_end_matches(".sealed"));
        let siblings: Vec<&String> = remote
            .keys()
            .filter(|n| n.starts_with(&stem) && n.as_str() != manifest && kind(n) == Some(Kind::Backup))
            .collect();
        if siblings.iter().any(|n| local.contains(n.as_str())) {
            continue;
        }
        out.push(manifest.clone());
        out.extend(siblings.into_iter().cloned());
    }
    let oldest_kept = kept.iter().filter_map(|&i| infos.get(i)).map(|b| b.manifest.head_seq).min();
    if let Some(floor) = oldest_kept {
        for name in remote.keys() {
            let old = segment(name).is_some_and(|s| s.last <= floor);
            if old && !local.contains(name) {
                out.push(name.clone());
            }
        }
    }
    out
}

/// Remote segments a longer remote segment with the same first seq supersedes
/// (the shipper rewrites its open segment longer at each round).
pub fn superseded(remote: &BTreeMap<String, RemoteObject>) -> Vec<String> {
    let mut longest: BTreeMap<u64, u64> = BTreeMap::new();
    for name in remote.keys().filter_map(|n| segment(n)) {
        let last = longest.entry(name.first).or_insert(name.last);
        *last = (*last).max(name.last);
    }
    remote
        .keys()
        .filter(|n| segment(n).is_some_and(|s| longest.get(&s.first).is_some_and(|&l| l > s.last)))
        .cloned()
        .collect()
}

/// A remote segment that belongs to another timeline than the local ones:
/// its seqs overlap a local segment's without being that segment or a
/// shorter copy of it (the store was restored to an earlier instant, or
/// another appliance writes under the prefix). Returns (remote, local).
pub fn other_timeline(remote: &BTreeMap<String, RemoteObject>, local: &[String]) -> Option<(String, String)> {
    let local: Vec<(&String, crate::lifecycle::shipping::SegmentName)> =
        local.iter().filter_map(|n| segment(n).map(|s| (n, s))).collect();
    remote.keys().filter_map(|r| segment(r).map(|s| (r, s))).find_map(|(r, rs)| {
        local
            .iter()
            .find(|(_, ls)| {
                let overlap = rs.first <= ls.last && ls.first <= rs.last;
                let same_or_shorter = rs.first == ls.first && rs.last <= ls.last && rs.first_time == ls.first_time;
                overlap && !same_or_shorter
            })
            .map(|(l, _)| (r.clone(), (*l).clone()))
    })
}

/// The instants a restore from the bucket alone reaches: from the oldest
/// backup's head (or, with none, the first segment) to the newest commit
/// held by a segment or backup.
pub fn window(remote: &BTreeMap<String, RemoteObject>, manifests: &HashMap<String, Manifest>) -> super::status::Window {
    let segments: Vec<_> = remote.keys().filter_map(|n| segment(n)).collect();
    let heads = backups(manifests);
    let backup_time = |b: &BackupInfo| b.manifest.head_time.unwrap_or(b.manifest.created);
    let start = heads
        .first()
        .map(|(_, b)| backup_time(b))
        .or_else(|| segments.iter().map(|s| s.first_time).min().map(Timestamp::from_micros));
    let newest_segment = segments.iter().map(|s| s.last_time).max().map(Timestamp::from_micros);
    let newest_backup = heads.iter().map(|(_, b)| backup_time(b)).max();
    let end = newest_segment.max(newest_backup);
    super::status::Window { start, end }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::shipping::SegmentName;

    fn object(name: &str) -> (String, RemoteObject) {
        (name.to_string(), RemoteObject { name: name.to_string(), size: 1, modified: 0 })
    }

    fn seg(first: u64, last: u64) -> String {
        let name = SegmentName { first, last, first_time: first as i64, last_time: last as i64 };
        format!("segments/{}", name.file_name())
    }

    fn manifest(created: &str, head_seq: u64, file: &str) -> Manifest {
        Manifest {
            format: crate::lifecycle::backup::archive::FORMAT.into(),
            docket_version: String::new(),
            schema_version: 3,
            created: Timestamp::parse(created).unwrap(),
            head_seq,
            head_time: Some(Timestamp::parse(created).unwrap()),
            first_seq: None,
            rows: 0,
            parts: Default::default(),
            recipients: vec![],
            signer: String::new(),
            signature: String::new(),
            file: file.into(),
            bytes: 0,
            sha256: String::new(),
        }
    }

    #[test]
    fn segments_of_another_timeline_are_found() {
        let remote: BTreeMap<_, _> = [object(&seg(1, 9)), object(&seg(10, 20))].into();
        assert_eq!(other_timeline(&remote, &[seg(10, 25), seg(26, 30)]), None, "the same timeline, rolled further");
        assert_eq!(other_timeline(&remote, &[seg(21, 22)]), None, "after the remote ones");
        let restored_earlier = [seg(15, 16)];
        assert_eq!(other_timeline(&remote, &restored_earlier), Some((seg(10, 20), seg(15, 16))));
        assert_eq!(other_timeline(&remote, &[seg(10, 12)]).map(|c| c.0), Some(seg(10, 20)), "remote longer than local");
    }

    #[test]
    fn a_longer_segment_supersedes_the_shorter_ones_of_its_first_seq() {
        let remote: BTreeMap<_, _> = [object(&seg(1, 5)), object(&seg(1, 9)), object(&seg(10, 12))].into();
        assert_eq!(superseded(&remote), vec![seg(1, 5)]);
    }

    #[test]
    fn the_bucket_keeps_what_local_retention_keeps_and_never_what_is_still_local() {
        // Two backups on each of three days; keep one day: the newest backup stays.
        let mut remote = BTreeMap::new();
        let mut manifests = HashMap::new();
        for (i, day) in ["2026-03-01", "2026-03-02", "2026-03-03"].iter().enumerate() {
            let stem = format!("backup-{day}-{i}");
            let head = (i as u64 + 1) * 10;
            let m = manifest(&format!("{day}T02:00:00Z"), head, &format!("{stem}.sealed"));
            remote.extend([object(&format!("{stem}.sealed")), object(&format!("{stem}.manifest.json"))]);
            manifests.insert(format!("{stem}.manifest.json"), m);
        }
        remote.extend([object(&seg(1, 10)), object(&seg(11, 25)), object(&seg(26, 40))]);
        let keep = Keep { daily: 1, weekly: 0 };
        let gone = plan(&remote, &manifests, &BTreeSet::new(), keep, None);
        assert_eq!(
            gone,
            vec![
                "backup-2026-03-01-0.manifest.json".to_string(),
                "backup-2026-03-01-0.sealed".into(),
                "backup-2026-03-02-1.manifest.json".into(),
                "backup-2026-03-02-1.sealed".into(),
                seg(1, 10),
                seg(11, 25),
            ],
            "manifest before its sealed file; segments up to the kept backup's head (30)"
        );
        let local: BTreeSet<String> = ["backup-2026-03-02-1.sealed".to_string(), seg(11, 25)].into();
        let gone = plan(&remote, &manifests, &local, keep, None);
        assert!(!gone.iter().any(|n| n.contains("2026-03-02") || *n == seg(11, 25)), "still local: kept: {gone:?}");
        assert!(
            plan(&remote, &HashMap::new(), &BTreeSet::new(), keep, None).is_empty(),
            "no backup: segments are all there is"
        );
        // A manifest naming another backup's file is not believed (nor acted on).
        let mut forged = manifests.clone();
        let other = manifest("2026-03-04T02:00:00Z", 99, "backup-2026-03-03-2.sealed");
        forged.insert("backup-x.manifest.json".into(), other);
        remote.insert("backup-x.manifest.json".into(), object("backup-x.manifest.json").1);
        let honest = plan(&remote, &manifests, &BTreeSet::new(), keep, None);
        assert_eq!(plan(&remote, &forged, &BTreeSet::new(), keep, None), honest);
    }
}
