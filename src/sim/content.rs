//! The account's listed records: groups, brands, Help Center categories, sections and articles,
//! community topics and posts.
//!
//! Each kind has its own random streams (never the tickets', users' or organizations'), so adding
//! these records left those byte-identical. Records are kept as compact JSON text by id (lists
//! page by id) and, for the time export of articles, by (updated_at, id).
//!
//! How a deletion shows: groups are soft-deleted (`deleted: true`, a new `updated_at`, listed only
//! with `exclude_deleted=false`); brands, categories, sections, topics and posts are hard-deleted
//! (they vanish from their listing and keep, as ground truth, the last JSON they were listed
//! with); articles are archived (they vanish from the article list and from the incremental
//! article export, keeping their last JSON).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rand::rngs::StdRng;
use rand::seq::index;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::data::{
    optional, pick, rfc3339, stream_rng, Clock, BRAND_IDS, DAY_SECS, FIRST_USER_ID, GROUP_IDS,
    MIN_AGE_SECS, RECORD_BASE_URL, TAGS, TICKET_FORM_IDS, YEAR_SECS,
};
use super::{Round, SimConfig};

/// The kinds of listed records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Groups,
    Brands,
    Categories,
    Sections,
    Topics,
    Posts,
    Articles,
}

/// Whether a list belongs to Zendesk Support (its last page still carries `links.next`) or to the
/// Help Center / community (its last page has no `links.next`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Support,
    HelpCenter,
}

impl Kind {
    pub(crate) const ALL: [Kind; 7] = [
        Kind::Groups,
        Kind::Brands,
        Kind::Categories,
        Kind::Sections,
        Kind::Topics,
        Kind::Posts,
        Kind::Articles,
    ];

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The record key of its list, and the name of its `records()`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Groups => "groups",
            Kind::Brands => "brands",
            Kind::Categories => "categories",
            Kind::Sections => "sections",
            Kind::Topics => "topics",
            Kind::Posts => "posts",
            Kind::Articles => "articles",
        }
    }

    /// The list's path, without ".json".
    pub(crate) fn path(self) -> &'static str {
        match self {
            Kind::Groups => "/api/v2/groups",
            Kind::Brands => "/api/v2/brands",
            Kind::Categories => "/api/v2/help_center/categories",
            Kind::Sections => "/api/v2/help_center/sections",
            Kind::Topics => "/api/v2/community/topics",
            Kind::Posts => "/api/v2/community/posts",
            Kind::Articles => "/api/v2/help_center/articles",
        }
    }

    /// The kind listed at `path` (without ".json"); Zendesk also serves the community under
    /// `/api/v2/help_center/community/`.
    pub(crate) fn from_path(path: &str) -> Option<Self> {
        let path = match path.strip_prefix("/api/v2/help_center/community/") {
            Some(rest) => format!("/api/v2/community/{rest}"),
            None => path.to_string(),
        };
        Self::ALL.into_iter().find(|kind| kind.path() == path)
    }

    pub(crate) fn family(self) -> Family {
        match self {
            Kind::Groups | Kind::Brands => Family::Support,
            _ => Family::HelpCenter,
        }
    }

    fn first_id(self) -> i64 {
        match self {
            Kind::Groups => GROUP_IDS[0],
            Kind::Brands => BRAND_IDS[0],
            Kind::Categories => 360_010_000_001,
            Kind::Sections => 360_020_000_001,
            Kind::Topics => 360_030_000_001,
            Kind::Posts => 360_040_000_001,
            Kind::Articles => 360_050_000_001,
        }
    }

    /// Random stream numbers (see `data::stream_rng`); 1-3 belong to the original objects.
    fn stream(self) -> u64 {
        match self {
            Kind::Groups => 11,
            Kind::Brands => 12,
            Kind::Categories => 13,
            Kind::Sections => 14,
            Kind::Topics => 15,
            Kind::Posts => 16,
            Kind::Articles => 17,
        }
    }

    /// Records that are never deleted: the groups and brands tickets point at.
    fn protected(self) -> &'static [i64] {
        match self {
            Kind::Groups => &GROUP_IDS,
            Kind::Brands => &BRAND_IDS,
            _ => &[],
        }
    }

    /// How a deletion of this kind shows.
    fn delete_rule(self) -> Delete {
        match self {
            Kind::Groups => Delete::Soft,
            Kind::Articles => Delete::Archive,
            _ => Delete::Hard,
        }
    }

    /// (creates, updates, deletes) of one round: at least one of each that the round has any of,
    /// more for the kinds that are numerous in real accounts.
    fn round_counts(self, round: &Round) -> (usize, usize, usize) {
        let scale = |n: usize, per: usize| if n == 0 { 0 } else { (n / per).max(1) };
        let per = match self {
            Kind::Posts | Kind::Articles => 4,
            _ => 20,
        };
        (
            scale(round.creates, per),
            scale(round.updates + round.silent_updates, per),
            scale(round.deletes, per),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delete {
    /// Still there, flagged (groups: `deleted: true`).
    Soft,
    /// Gone from the listing.
    Hard,
    /// Gone from the listing and the incremental export (articles).
    Archive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Live,
    /// Soft-deleted: listed only on request.
    Deleted,
    /// Hard-deleted or archived: never served again.
    Gone,
}

struct Item {
    updated: i64,
    status: Status,
    json: Box<str>,
}

/// One kind's records, by id and by (updated_at, id) for the ones still served.
#[derive(Default)]
pub(crate) struct Catalog {
    items: BTreeMap<i64, Item>,
    order: BTreeSet<(i64, i64)>,
}

impl Catalog {
    fn insert(&mut self, id: i64, updated: i64, value: &Value) {
        if let Some(old) = self.items.insert(
            id,
            Item {
                updated,
                status: Status::Live,
                json: value.to_string().into_boxed_str(),
            },
        ) {
            self.order.remove(&(old.updated, id));
        }
        self.order.insert((updated, id));
    }

    /// Changes a served record and moves it to its new time position.
    fn update(&mut self, id: i64, updated: i64, change: impl FnOnce(&mut Map<String, Value>)) {
        let Some(item) = self.items.get_mut(&id) else {
            return;
        };
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&item.json) else {
            return;
        };
        change(&mut map);
        map.insert("updated_at".into(), json!(rfc3339(updated)));
        item.json = Value::Object(map).to_string().into_boxed_str();
        self.order.remove(&(item.updated, id));
        item.updated = updated;
        self.order.insert((updated, id));
    }

    fn set_status(&mut self, id: i64, status: Status) {
        if let Some(item) = self.items.get_mut(&id) {
            item.status = status;
            if status == Status::Gone {
                self.order.remove(&(item.updated, id));
            }
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// Ids of live records (not deleted in any way), in id order, without `protected`.
    fn live_ids(&self, protected: &[i64]) -> Vec<i64> {
        self.items
            .iter()
            .filter(|(id, item)| item.status == Status::Live && !protected.contains(id))
            .map(|(id, _)| *id)
            .collect()
    }

    fn is_listed(item: &Item, include_deleted: bool) -> bool {
        match item.status {
            Status::Live => true,
            Status::Deleted => include_deleted,
            Status::Gone => false,
        }
    }

    /// Listed records with an id above `after` (all when None), in id order.
    pub(crate) fn list_after(
        &self,
        after: Option<i64>,
        include_deleted: bool,
    ) -> impl Iterator<Item = (i64, &str)> {
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.items
            .range((lower, Bound::Unbounded))
            .filter(move |(_, item)| Self::is_listed(item, include_deleted))
            .map(|(id, item)| (*id, &*item.json))
    }

    /// Listed records with an id below `before` (all when None), in descending id order.
    pub(crate) fn list_before(
        &self,
        before: Option<i64>,
        include_deleted: bool,
    ) -> impl Iterator<Item = (i64, &str)> {
        let upper = before.map_or(Bound::Unbounded, Bound::Excluded);
        self.items
            .range((Bound::Unbounded, upper))
            .rev()
            .filter(move |(_, item)| Self::is_listed(item, include_deleted))
            .map(|(id, item)| (*id, &*item.json))
    }

    /// Served records from second `start` on, in (updated_at, id) order.
    pub(crate) fn since_second(&self, start: i64) -> impl Iterator<Item = (i64, &str)> {
        self.order
            .range((Bound::Included((start, i64::MIN)), Bound::Unbounded))
            .filter_map(move |&(key, id)| self.items.get(&id).map(|item| (key, &*item.json)))
    }

    /// Every record the account ever had, with its last JSON, by id.
    pub(crate) fn values(&self) -> impl Iterator<Item = &str> {
        self.items.values().map(|item| &*item.json)
    }

    /// Ids of records deleted in any way.
    pub(crate) fn deleted_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.items
            .iter()
            .filter(|(_, item)| item.status != Status::Live)
            .map(|(id, _)| *id)
    }
}

/// Resolved record counts of a new account.
fn initial_count(kind: Kind, config: &SimConfig) -> usize {
    let scaled = |n: Option<usize>, base: usize, per_ticket: usize, max: usize| {
        n.unwrap_or_else(|| (base + config.tickets / per_ticket).min(max))
    };
    match kind {
        // The ticket's groups and brands always exist.
        Kind::Groups => scaled(config.groups, 6, 250, 200).max(GROUP_IDS.len()),
        Kind::Brands => scaled(config.brands, 3, 2_000, 20).max(BRAND_IDS.len()),
        Kind::Categories => scaled(config.categories, 3, 1_000, 50),
        Kind::Sections => config
            .sections
            .unwrap_or_else(|| 3 * initial_count(Kind::Categories, config)),
        Kind::Topics => scaled(config.topics, 3, 2_000, 30),
        Kind::Posts => scaled(config.posts, 10, 10, 5_000),
        Kind::Articles => scaled(config.articles, 10, 6, 20_000),
    }
}

const GROUP_NAMES: [&str; 8] = [
    "Support",
    "Billing",
    "Tier 2",
    "Escalations",
    "Onboarding",
    "Kundenservice",
    "Équipe FR",
    "VIP desk",
];
const BRAND_NAMES: [&str; 5] = [
    "Simulated",
    "Café Brand",
    "サンドボックス",
    "Nordic",
    "Labs",
];
const CATEGORY_NAMES: [&str; 6] = [
    "General",
    "Billing & payments",
    "Getting started",
    "Troubleshooting",
    "Häufige Fragen",
    "Account",
];
const SECTION_NAMES: [&str; 8] = [
    "Order status",
    "Delivery and shipping",
    "Returns and exchanges",
    "Payment plans",
    "Gift cards",
    "About our products",
    "Passwords & login",
    "Rechnungen",
];
const TOPIC_NAMES: [&str; 4] = [
    "Feature Requests",
    "General Discussion",
    "Tips & tricks",
    "Announcements",
];
const TITLES: [&str; 8] = [
    "How do I reset my password?",
    "Refund policy for order {n}",
    "Café integration ✓ — setup guide",
    "Why is my invoice {n} \"pending\"?",
    "Dark mode please",
    "Lieferzeiten nach Österreich",
    "Problème de connexion",
    "配送状況の確認方法",
];
const BODIES: [&str; 5] = [
    "<p>Go to <strong>Settings</strong> and click \"Reset\".</p>",
    "<p>All purchases are backed by our 30-day guarantee.</p><ul><li>Step 1</li><li>Step 2</li></ul>",
    "<p>Line one<br>Line two — Zoë ✓</p>",
    "<p>Use <code>C:\\\\Users\\\\demo</code> &amp; restart.</p>",
    "<p>注文の状況はアカウントページで確認できます。</p>",
];
const POST_STATUSES: [&str; 5] = ["none", "planned", "not_planned", "answered", "completed"];
const HELP_CENTER_STATES: [&str; 3] = ["enabled", "disabled", "restricted"];
const COMMUNITY_ID: i64 = 360_039_000_001;
const PERMISSION_GROUP_ID: i64 = 360_059_000_001;
const USER_SEGMENT_IDS: [i64; 2] = [360_058_000_001, 360_058_000_002];

/// "Order status" → "Order-status", as in Help Center `html_url`s.
fn slug(name: &str) -> String {
    name.split(|c: char| !c.is_alphanumeric())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

fn title(rng: &mut StdRng) -> String {
    pick(rng, &TITLES).replace("{n}", &rng.gen_range(1000..100_000).to_string())
}

/// The groups, brands, Help Center and community records.
#[derive(Default)]
pub(crate) struct Content {
    groups: Catalog,
    brands: Catalog,
    categories: Catalog,
    sections: Catalog,
    topics: Catalog,
    posts: Catalog,
    articles: Catalog,
}

/// What a new record may point at.
struct Context {
    users: usize,
    categories: Vec<i64>,
    sections: Vec<i64>,
    topics: Vec<i64>,
}

impl Context {
    fn user(&self, rng: &mut StdRng) -> i64 {
        FIRST_USER_ID + rng.gen_range(0..self.users.max(1) as i64)
    }
}

/// A parent among `ids`, or a made-up one when there is none left.
fn parent(rng: &mut StdRng, ids: &[i64], fallback: i64) -> i64 {
    if ids.is_empty() {
        fallback
    } else {
        ids[rng.gen_range(0..ids.len())]
    }
}

impl Content {
    /// The initial records, their history ending at `origin` (unix seconds).
    pub(crate) fn new(config: &SimConfig, users: usize, origin: i64) -> Self {
        let mut content = Self::default();
        let lo = origin - YEAR_SECS;
        let hi = origin - MIN_AGE_SECS;
        // Parents first, so children point at existing records.
        for kind in [
            Kind::Groups,
            Kind::Brands,
            Kind::Categories,
            Kind::Sections,
            Kind::Topics,
            Kind::Posts,
            Kind::Articles,
        ] {
            let count = initial_count(kind, config);
            let mut rng = stream_rng(config.seed, 0, kind.stream());
            // Crowded seconds matter for the one time export (articles); harmless elsewhere.
            let clock = Clock::new(&mut rng, (lo, hi), count, 2, 0.25);
            let context = content.context(users);
            for _ in 0..count {
                let updated = clock.pick(&mut rng);
                let created = if rng.gen_bool(0.3) {
                    updated
                } else {
                    (updated - rng.gen_range(0..=120 * DAY_SECS)).max(lo)
                };
                content.create(kind, &mut rng, &context, created, updated);
            }
        }
        content
    }

    pub(crate) fn catalog(&self, kind: Kind) -> &Catalog {
        match kind {
            Kind::Groups => &self.groups,
            Kind::Brands => &self.brands,
            Kind::Categories => &self.categories,
            Kind::Sections => &self.sections,
            Kind::Topics => &self.topics,
            Kind::Posts => &self.posts,
            Kind::Articles => &self.articles,
        }
    }

    fn catalog_mut(&mut self, kind: Kind) -> &mut Catalog {
        match kind {
            Kind::Groups => &mut self.groups,
            Kind::Brands => &mut self.brands,
            Kind::Categories => &mut self.categories,
            Kind::Sections => &mut self.sections,
            Kind::Topics => &mut self.topics,
            Kind::Posts => &mut self.posts,
            Kind::Articles => &mut self.articles,
        }
    }

    fn context(&self, users: usize) -> Context {
        Context {
            users,
            categories: self.categories.live_ids(&[]),
            sections: self.sections.live_ids(&[]),
            topics: self.topics.live_ids(&[]),
        }
    }

    /// Creates, updates and deletes some records of every kind, with timestamps in
    /// `[window.0, window.1]`.
    pub(crate) fn apply_round(
        &mut self,
        seed: u64,
        round_number: u64,
        round: &Round,
        (lo, hi): (i64, i64),
        users: usize,
    ) {
        for kind in Kind::ALL {
            let (creates, updates, deletes) = kind.round_counts(round);
            if creates + updates + deletes == 0 {
                continue;
            }
            let mut rng = stream_rng(seed, round_number, kind.stream());
            let when = |rng: &mut StdRng| rng.gen_range(lo..=hi.max(lo));
            // Keep one parent of each kind, so new children have somewhere to go.
            let keep = usize::from(matches!(
                kind,
                Kind::Categories | Kind::Sections | Kind::Topics
            ));
            let deletable = self.catalog(kind).live_ids(kind.protected());
            let deletes = deletes.min(deletable.len().saturating_sub(keep));
            let doomed: BTreeSet<i64> = index::sample(&mut rng, deletable.len(), deletes)
                .into_iter()
                .map(|i| deletable[i])
                .collect();
            let changeable: Vec<i64> = self
                .catalog(kind)
                .live_ids(&[])
                .into_iter()
                .filter(|id| !doomed.contains(id))
                .collect();
            let context = self.context(users);
            let chosen = index::sample(&mut rng, changeable.len(), updates.min(changeable.len()));
            for i in chosen {
                let id = changeable[i];
                let ts = when(&mut rng);
                let change = rng.gen_range(0..4);
                let seed_value = rng.gen_range(0..1000_i64);
                self.catalog_mut(kind).update(id, ts, |map| {
                    change_record(kind, map, change, seed_value, ts, &context);
                });
            }
            for id in doomed {
                let ts = when(&mut rng);
                match kind.delete_rule() {
                    Delete::Soft => {
                        let catalog = self.catalog_mut(kind);
                        catalog.update(id, ts, |map| {
                            map.insert("deleted".into(), json!(true));
                        });
                        catalog.set_status(id, Status::Deleted);
                    }
                    Delete::Hard | Delete::Archive => {
                        self.catalog_mut(kind).set_status(id, Status::Gone);
                    }
                }
            }
            let context = self.context(users);
            for _ in 0..creates {
                let ts = when(&mut rng);
                self.create(kind, &mut rng, &context, ts, ts);
            }
        }
    }

    fn create(
        &mut self,
        kind: Kind,
        rng: &mut StdRng,
        context: &Context,
        created: i64,
        updated: i64,
    ) {
        let index = self.catalog(kind).len();
        let id = kind.first_id() + index as i64;
        let value = make_record(kind, rng, context, id, index, created, updated);
        self.catalog_mut(kind).insert(id, updated, &value);
    }
}

fn make_record(
    kind: Kind,
    rng: &mut StdRng,
    context: &Context,
    id: i64,
    index: usize,
    created: i64,
    updated: i64,
) -> Value {
    let (created_at, updated_at) = (rfc3339(created), rfc3339(updated));
    match kind {
        Kind::Groups => {
            let name = match GROUP_NAMES.get(index) {
                Some(name) => (*name).to_string(),
                None => format!("{} {}", pick(rng, &GROUP_NAMES), index + 1),
            };
            json!({
                "url": format!("{RECORD_BASE_URL}/api/v2/groups/{id}.json"),
                "id": id,
                "is_public": rng.gen_bool(0.8),
                "name": name,
                "description": optional(rng, 0.5, |_| json!("Handles \"first line\" requests — café ✓")),
                "default": index == 0,
                "deleted": false,
                "created_at": created_at,
                "updated_at": updated_at,
            })
        }
        Kind::Brands => {
            let name = match BRAND_NAMES.get(index) {
                Some(name) => (*name).to_string(),
                None => format!("{} {}", pick(rng, &BRAND_NAMES), index + 1),
            };
            let subdomain = format!("simulated-brand{}", index + 1);
            let logo = optional(rng, 0.5, |rng| brand_logo(rng, id));
            json!({
                "url": format!("{RECORD_BASE_URL}/api/v2/brands/{id}.json"),
                "id": id,
                "name": name,
                "brand_url": format!("https://{subdomain}.zendesk.com"),
                "subdomain": subdomain,
                "has_help_center": index == 0 || rng.gen_bool(0.5),
                "help_center_state": pick(rng, &HELP_CENTER_STATES),
                "active": rng.gen_bool(0.9),
                "default": index == 0,
                "is_deleted": false,
                "logo": logo,
                "ticket_form_ids": TICKET_FORM_IDS,
                "signature_template": "{{agent.signature}}",
                "created_at": created_at,
                "updated_at": updated_at,
                "host_mapping": optional(rng, 0.2, |_| json!(format!("help{}.example.com", index + 1))),
            })
        }
        Kind::Categories => {
            let name = format!("{} {}", pick(rng, &CATEGORY_NAMES), index + 1);
            json!({
                "id": id,
                "url": format!("{RECORD_BASE_URL}/api/v2/help_center/en-us/categories/{id}.json"),
                "html_url": format!("{RECORD_BASE_URL}/hc/en-us/categories/{id}-{}", slug(&name)),
                "position": rng.gen_range(0..5),
                "created_at": created_at,
                "updated_at": updated_at,
                "name": name,
                "description": pick(rng, &[Value::Null, json!(""), json!("Everything about \"billing\" — ✓")]).clone(),
                "locale": "en-us",
                "source_locale": "en-us",
                "outdated": rng.gen_bool(0.05),
            })
        }
        Kind::Sections => {
            let name = format!("{} {}", pick(rng, &SECTION_NAMES), index + 1);
            let category = parent(rng, &context.categories, Kind::Categories.first_id());
            let parent_section = if !context.sections.is_empty() && rng.gen_bool(0.2) {
                json!(parent(rng, &context.sections, id))
            } else {
                Value::Null
            };
            json!({
                "id": id,
                "url": format!("{RECORD_BASE_URL}/api/v2/help_center/en-us/sections/{id}.json"),
                "html_url": format!("{RECORD_BASE_URL}/hc/en-us/sections/{id}-{}", slug(&name)),
                "category_id": category,
                "position": rng.gen_range(-6..3),
                "sorting": "manual",
                "created_at": created_at,
                "updated_at": updated_at,
                "name": name,
                "description": optional(rng, 0.3, |_| json!("A section — with “quotes”")),
                "locale": "en-us",
                "source_locale": "en-us",
                "outdated": false,
                "parent_section_id": parent_section,
                "theme_template": "section_page",
            })
        }
        Kind::Topics => {
            let name = format!("{} {}", pick(rng, &TOPIC_NAMES), index + 1);
            json!({
                "id": id,
                "url": format!("{RECORD_BASE_URL}/api/v2/help_center/community/topics/{id}.json"),
                "html_url": format!("{RECORD_BASE_URL}/hc/en-us/community/topics/{id}-{}", slug(&name)),
                "name": name,
                "description": optional(rng, 0.4, |_| json!("Ask & answer ✓")),
                "position": rng.gen_range(0..3),
                "follower_count": rng.gen_range(0..50),
                "community_id": COMMUNITY_ID,
                "created_at": created_at,
                "updated_at": updated_at,
                "manageable_by": pick(rng, &["managers", "staff"]),
                "user_segment_id": optional(rng, 0.3, |rng| json!(pick(rng, &USER_SEGMENT_IDS))),
            })
        }
        Kind::Posts => {
            let title = title(rng);
            let votes = rng.gen_range(0..40);
            json!({
                "id": id,
                "url": format!("{RECORD_BASE_URL}/api/v2/help_center/community/posts/{id}.json"),
                "html_url": format!("{RECORD_BASE_URL}/hc/en-us/community/posts/{id}-{}", slug(&title)),
                "title": title,
                "details": pick(rng, &BODIES),
                "author_id": context.user(rng),
                "vote_sum": votes - 2 * rng.gen_range(0..=votes / 2),
                "vote_count": votes,
                "comment_count": rng.gen_range(0..30),
                "follower_count": rng.gen_range(0..20),
                "topic_id": parent(rng, &context.topics, Kind::Topics.first_id()),
                "pinned": rng.gen_bool(0.05),
                "featured": rng.gen_bool(0.05),
                "closed": rng.gen_bool(0.1),
                "status": pick(rng, &POST_STATUSES),
                "created_at": created_at,
                "updated_at": updated_at,
            })
        }
        Kind::Articles => {
            let title = title(rng);
            let votes = rng.gen_range(0..40);
            let labels: Vec<&str> = (0..rng.gen_range(0..3))
                .map(|_| *pick(rng, &TAGS))
                .collect();
            let segment = optional(rng, 0.2, |rng| json!(pick(rng, &USER_SEGMENT_IDS)));
            let segments = match segment.as_i64() {
                Some(id) => json!([id]),
                None => json!([]),
            };
            json!({
                "id": id,
                "url": format!("{RECORD_BASE_URL}/api/v2/help_center/en-us/articles/{id}.json"),
                "html_url": format!("{RECORD_BASE_URL}/hc/en-us/articles/{id}-{}", slug(&title)),
                "author_id": context.user(rng),
                "comments_disabled": rng.gen_bool(0.2),
                "draft": rng.gen_bool(0.2),
                "promoted": rng.gen_bool(0.1),
                "position": rng.gen_range(0..5),
                "vote_sum": votes - 2 * rng.gen_range(0..=votes / 2),
                "vote_count": votes,
                "section_id": parent(rng, &context.sections, Kind::Sections.first_id()),
                "created_at": created_at,
                "updated_at": updated_at,
                "name": title,
                "title": title,
                "source_locale": "en-us",
                "locale": "en-us",
                "outdated": rng.gen_bool(0.05),
                "outdated_locales": [],
                "edited_at": updated_at,
                "user_segment_id": segment,
                "permission_group_id": PERMISSION_GROUP_ID,
                "content_tag_ids": [],
                "label_names": labels,
                "body": pick(rng, &BODIES),
                "user_segment_ids": segments,
            })
        }
    }
}

/// One visible change of a record (its `updated_at` is set by the caller).
fn change_record(
    kind: Kind,
    map: &mut Map<String, Value>,
    change: u32,
    n: i64,
    ts: i64,
    context: &Context,
) {
    let mut set = |field: &str, value: Value| {
        map.insert(field.into(), value);
    };
    match (kind, change) {
        (Kind::Groups, 0 | 1) => set(
            "name",
            json!(format!(
                "{} {n}",
                GROUP_NAMES[n as usize % GROUP_NAMES.len()]
            )),
        ),
        (Kind::Groups, _) => set("description", json!(format!("Queue #{n} — “renamed”"))),
        (Kind::Brands, 0) => set(
            "name",
            json!(format!(
                "{} {n}",
                BRAND_NAMES[n as usize % BRAND_NAMES.len()]
            )),
        ),
        (Kind::Brands, 1) => set(
            "help_center_state",
            json!(HELP_CENTER_STATES[n as usize % 3]),
        ),
        (Kind::Brands, 2) => set("host_mapping", json!(format!("support{n}.example.com"))),
        (Kind::Brands, _) => set("active", json!(n % 2 == 0)),
        (Kind::Categories | Kind::Sections | Kind::Topics, 0) => {
            set("description", json!(format!("Updated ✓ #{n}")))
        }
        (Kind::Categories | Kind::Sections | Kind::Topics, 1) => set("position", json!(n % 7 - 3)),
        (Kind::Topics, _) => set("follower_count", json!(n % 60)),
        (Kind::Sections, 2) if !context.categories.is_empty() => set(
            "category_id",
            json!(context.categories[n as usize % context.categories.len()]),
        ),
        (Kind::Categories | Kind::Sections, _) => set("outdated", json!(n % 2 == 0)),
        (Kind::Posts, 0) => {
            set("vote_count", json!(n % 50));
            set("vote_sum", json!(n % 50 - 2 * (n % 7)));
        }
        (Kind::Posts, 1) => set("comment_count", json!(n % 40)),
        (Kind::Posts, 2) => set(
            "status",
            json!(POST_STATUSES[n as usize % POST_STATUSES.len()]),
        ),
        (Kind::Posts, _) => set(
            "title",
            json!(format!(
                "{} (edited {n})",
                TITLES[n as usize % TITLES.len()]
            )),
        ),
        (Kind::Articles, 0) => {
            set(
                "body",
                json!(format!(
                    "{}<p>Revision {n}</p>",
                    BODIES[n as usize % BODIES.len()]
                )),
            );
            set("edited_at", json!(rfc3339(ts)));
        }
        (Kind::Articles, 1) => {
            let title = format!("{} — v{n}", TITLES[n as usize % TITLES.len()]);
            set("name", json!(title));
            set("title", json!(title));
            set("edited_at", json!(rfc3339(ts)));
        }
        (Kind::Articles, 2) => {
            set("vote_count", json!(n % 50));
            set("vote_sum", json!(n % 50 - 2 * (n % 9)));
        }
        (Kind::Articles, _) => set("label_names", json!([TAGS[n as usize % TAGS.len()]])),
    }
}

fn brand_logo(rng: &mut StdRng, brand: i64) -> Value {
    let attachment = 360_000_142_000 + (brand % 1000) * 10;
    let base = format!("{RECORD_BASE_URL}/system/brands/{attachment}");
    let size = rng.gen_range(1000..10_000);
    json!({
        "url": format!("{RECORD_BASE_URL}/api/v2/attachments/{attachment}.json"),
        "id": attachment,
        "file_name": "logo.png",
        "content_url": format!("{base}/logo.png"),
        "mapped_content_url": format!("{base}/logo.png"),
        "content_type": "image/png",
        "size": size,
        "width": 80,
        "height": 80,
        "inline": false,
        "thumbnails": [{
            "url": format!("{RECORD_BASE_URL}/api/v2/attachments/{}.json", attachment + 1),
            "id": attachment + 1,
            "file_name": "logo_thumb.png",
            "content_url": format!("{base}/logo_thumb.png"),
            "mapped_content_url": format!("{base}/logo_thumb.png"),
            "content_type": "image/png",
            "size": size / 4,
            "width": 32,
            "height": 32,
            "inline": false,
        }],
    })
}
