//! The deep-nesting questions of a generated dataset, found from its relationships:
//! checks on documents and folders that sit [`MAX_FOLDER_DEPTH`] folders deep (the
//! answer climbs the whole chain), and team-membership checks on teams with at least
//! [`DEEP_TEAM_HEIGHT`] levels of teams, themselves included, down to their deepest
//! subteam (the generator nests teams [`MAX_TEAM_DEPTH`] deep, and its queries ask
//! about teams at most 5 high). The generator's "deepest question" (the first document
//! of a tenant, asked for a member of its deepest team) is among the first.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};

use anyhow::{Context as _, Result};
use arbiter_loadtest::dataset::{MAX_FOLDER_DEPTH, MAX_TEAM_DEPTH};

use super::{Dataset, QueryKind};

/// Indices into the dataset's queries.
#[derive(Debug, Default)]
pub struct DeepQueries {
    /// Document and folder checks on an object [`MAX_FOLDER_DEPTH`] folders deep.
    pub folders: Vec<usize>,
    /// Team-membership checks on a team [`DEEP_TEAM_HEIGHT`] or more teams high.
    pub teams: Vec<usize>,
}

/// Teams at least this high (the team asked about and 3 levels below it) are deep.
pub const DEEP_TEAM_HEIGHT: usize = MAX_TEAM_DEPTH as usize - 2;

/// How far a walk goes before it gives up (the generator's chains are far shorter; a
/// cycle, which the generator never writes, stops here).
const WALK_LIMIT: usize = 64;

pub fn deep_queries(ds: &Dataset) -> Result<DeepQueries> {
    let mut folder_parent: HashMap<String, String> = HashMap::new();
    let mut document_folder: HashMap<String, String> = HashMap::new();
    let mut subteams: HashMap<String, Vec<String>> = HashMap::new();
    let path = ds.relationships_path();
    let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    for line in BufReader::new(file).lines() {
        let line = line.with_context(|| format!("read {}", path.display()))?;
        let Some((resource, subject)) = line.trim().split_once('@') else { continue };
        if let Some(rest) = resource.strip_prefix("folder:") {
            if let (Some(f), Some(p)) = (rest.strip_suffix("#parent"), subject.strip_prefix("folder:")) {
                folder_parent.insert(f.to_string(), p.to_string());
            }
        } else if let Some(rest) = resource.strip_prefix("document:") {
            if let (Some(d), Some(f)) = (rest.strip_suffix("#folder"), subject.strip_prefix("folder:")) {
                document_folder.insert(d.to_string(), f.to_string());
            }
        } else if let Some(rest) = resource.strip_prefix("team:") {
            let child = subject.strip_prefix("team:").and_then(|s| s.strip_suffix("#member"));
            if let (Some(t), Some(c)) = (rest.strip_suffix("#member"), child) {
                subteams.entry(t.to_string()).or_default().push(c.to_string());
            }
        }
    }
    let depth = |folder: &str| {
        let mut d = 1;
        let mut at = folder;
        while let Some(p) = folder_parent.get(at) {
            d += 1;
            at = p;
            if d >= WALK_LIMIT {
                break;
            }
        }
        d
    };
    let mut heights: HashMap<&str, usize> = HashMap::new();
    let mut out = DeepQueries::default();
    for (i, q) in ds.queries.iter().enumerate() {
        match q.kind {
            QueryKind::DocumentView | QueryKind::DocumentEdit => {
                if document_folder.get(&q.resource).is_some_and(|f| depth(f) >= usize::from(MAX_FOLDER_DEPTH)) {
                    out.folders.push(i);
                }
            }
            QueryKind::FolderView => {
                if depth(&q.resource) >= usize::from(MAX_FOLDER_DEPTH) {
                    out.folders.push(i);
                }
            }
            QueryKind::TeamMembership => {
                if height(&subteams, &mut heights, &q.resource, 0) >= DEEP_TEAM_HEIGHT {
                    out.teams.push(i);
                }
            }
        }
    }
    Ok(out)
}

/// Levels of teams from `team` down to its deepest subteam, itself included.
fn height<'a>(
    subteams: &'a HashMap<String, Vec<String>>,
    memo: &mut HashMap<&'a str, usize>,
    team: &str,
    walked: usize,
) -> usize {
    if let Some(h) = memo.get(team) {
        return *h;
    }
    let Some((key, children)) = subteams.get_key_value(team) else { return 1 };
    if walked >= WALK_LIMIT {
        return 1;
    }
    let h = 1 + children.iter().map(|c| height(subteams, memo, c, walked + 1)).max().unwrap_or(0);
    memo.insert(key, h);
    h
}
