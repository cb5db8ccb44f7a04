//! The account's listed records: groups, brands, Help Center categories, sections and articles,
//! community topics and posts, and the account's configuration (fields, forms, custom statuses,
//! macros, automations, views, SLA policies, memberships, schedules, custom roles: their records
//! are made in `admin.rs`; triggers live with the Triggers API in `webhooks.rs`).
//!
//! Each kind has its own random streams (never the tickets', users' or organizations'), so adding
//! these records left those byte-identical. Records are kept as compact JSON text by id (lists
//! page by id) and, for the time export of articles, by (updated_at, id).
//!
//! How a deletion shows: groups are soft-deleted (`deleted: true`, a new `updated_at`, listed only
//! with `exclude_deleted=false`); brands, categories, sections, topics, posts and every kind of
//! the configuration are hard-deleted (they vanish from their listing and keep, as ground truth,
//! the last JSON they were listed with); articles are archived (they vanish from the article list
//! and from the incremental article export, keeping their last JSON). The records other records
//! point at are never deleted: the tickets' groups, brands, forms, custom fields and custom
//! statuses, the users' custom roles and the keys of their `user_fields` and
//! `organization_fields` ([`Kind::fixed`]).
//!
//! Paging (Zendesk's reference): every list pages by cursor, except the ones Zendesk documents
//! without pagination, answered whole in one response ([`Kind::paging`]); ticket fields do both,
//! whole unless the request asks for a page.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rand::rngs::StdRng;
use rand::seq::index;
use rand::Rng;
use serde_json::{json, Map, Value};

use super::admin;
use super::data::{
    optional, pick, rfc3339, stream_rng, Clock, Table, BRAND_IDS, CUSTOM_FIELD_IDS,
    CUSTOM_STATUS_BASE, DAY_SECS, FIRST_ORG_ID, FIRST_USER_ID, GROUP_IDS, MIN_AGE_SECS,
    RECORD_BASE_URL, TAGS, TICKET_FORM_IDS, YEAR_SECS,
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
    TicketFields,
    UserFields,
    OrganizationFields,
    TicketForms,
    CustomStatuses,
    Macros,
    Automations,
    Views,
    SlaPolicies,
    GroupMemberships,
    OrganizationMemberships,
    Schedules,
    CustomRoles,
}

/// How a list pages (Zendesk's reference for each endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Paging {
    /// `page[size]`, `page[after]` / `page[before]`.
    Cursor,
    /// No pagination: one answer holds the whole list, whatever the request asks.
    Whole,
    /// Whole unless the request asks for a page, then by cursor (ticket fields).
    WholeOrCursor,
}

/// Whether a list belongs to Zendesk Support (its last page still carries `links.next`) or to the
/// Help Center / community (its last page has no `links.next`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Support,
    HelpCenter,
}

impl Kind {
    /// Every kind, in the order records are made: parents before the records that point at
    /// them (categories before sections, ticket fields before ticket forms), and the kinds added
    /// later after the others, so that those kept their records.
    pub(crate) const ALL: [Kind; 20] = [
        Kind::Groups,
        Kind::Brands,
        Kind::Categories,
        Kind::Sections,
        Kind::Topics,
        Kind::Posts,
        Kind::Articles,
        Kind::TicketFields,
        Kind::UserFields,
        Kind::OrganizationFields,
        Kind::TicketForms,
        Kind::CustomStatuses,
        Kind::Macros,
        Kind::Automations,
        Kind::Views,
        Kind::SlaPolicies,
        Kind::GroupMemberships,
        Kind::OrganizationMemberships,
        Kind::Schedules,
        Kind::CustomRoles,
    ];

    /// Its place in [`Kind::ALL`].
    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|kind| *kind == self)
            .unwrap_or_default()
    }

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
            Kind::TicketFields => "ticket_fields",
            Kind::UserFields => "user_fields",
            Kind::OrganizationFields => "organization_fields",
            Kind::TicketForms => "ticket_forms",
            Kind::CustomStatuses => "custom_statuses",
            Kind::Macros => "macros",
            Kind::Automations => "automations",
            Kind::Views => "views",
            Kind::SlaPolicies => "sla_policies",
            Kind::GroupMemberships => "group_memberships",
            Kind::OrganizationMemberships => "organization_memberships",
            Kind::Schedules => "schedules",
            Kind::CustomRoles => "custom_roles",
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
            Kind::TicketFields => "/api/v2/ticket_fields",
            Kind::UserFields => "/api/v2/user_fields",
            Kind::OrganizationFields => "/api/v2/organization_fields",
            Kind::TicketForms => "/api/v2/ticket_forms",
            Kind::CustomStatuses => "/api/v2/custom_statuses",
            Kind::Macros => "/api/v2/macros",
            Kind::Automations => "/api/v2/automations",
            Kind::Views => "/api/v2/views",
            Kind::SlaPolicies => "/api/v2/slas/policies",
            Kind::GroupMemberships => "/api/v2/group_memberships",
            Kind::OrganizationMemberships => "/api/v2/organization_memberships",
            Kind::Schedules => "/api/v2/business_hours/schedules",
            Kind::CustomRoles => "/api/v2/custom_roles",
        }
    }

    pub(crate) fn paging(self) -> Paging {
        match self {
            Kind::TicketForms
            | Kind::CustomStatuses
            | Kind::SlaPolicies
            | Kind::Schedules
            | Kind::CustomRoles => Paging::Whole,
            Kind::TicketFields => Paging::WholeOrCursor,
            _ => Paging::Cursor,
        }
    }

    /// Whether the whole list's answer carries Zendesk's offset keys (`next_page: null`,
    /// `previous_page: null`, `count`), as the recorded ticket fields and forms do.
    pub(crate) fn whole_has_offset_keys(self) -> bool {
        matches!(
            self,
            Kind::TicketFields | Kind::TicketForms | Kind::SlaPolicies | Kind::CustomRoles
        )
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
            Kind::Categories | Kind::Sections | Kind::Topics | Kind::Posts | Kind::Articles => {
                Family::HelpCenter
            }
            _ => Family::Support,
        }
    }

    pub(crate) fn first_id(self) -> i64 {
        match self {
            Kind::Groups => GROUP_IDS[0],
            Kind::Brands => BRAND_IDS[0],
            Kind::Categories => 360_010_000_001,
            Kind::Sections => 360_020_000_001,
            Kind::Topics => 360_030_000_001,
            Kind::Posts => 360_040_000_001,
            Kind::Articles => 360_050_000_001,
            Kind::TicketFields => CUSTOM_FIELD_IDS[0],
            Kind::UserFields => 360_000_510_001,
            Kind::OrganizationFields => 360_000_520_001,
            Kind::TicketForms => TICKET_FORM_IDS[0],
            Kind::CustomStatuses => CUSTOM_STATUS_BASE + 1,
            Kind::Macros => 360_000_800_001,
            Kind::Automations => 360_000_810_001,
            Kind::Views => 360_000_820_001,
            Kind::SlaPolicies => 360_000_830_001,
            Kind::GroupMemberships => 360_000_840_001,
            Kind::OrganizationMemberships => 360_000_850_001,
            Kind::Schedules => 360_000_860_001,
            Kind::CustomRoles => admin::FIRST_CUSTOM_ROLE_ID,
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
            // 21 and 31-32 are the activity's and the jobs'.
            Kind::TicketFields => 40,
            Kind::UserFields => 41,
            Kind::OrganizationFields => 42,
            Kind::TicketForms => 43,
            Kind::CustomStatuses => 44,
            Kind::Macros => 45,
            Kind::Automations => 46,
            Kind::Views => 47,
            Kind::SlaPolicies => 48,
            Kind::GroupMemberships => 49,
            Kind::OrganizationMemberships => 50,
            Kind::Schedules => 51,
            Kind::CustomRoles => 52,
        }
    }

    /// The first records of a kind, which other records point at and which are never deleted:
    /// the groups, brands, forms, custom fields and custom statuses of tickets, the custom
    /// roles of users, the keys of `user_fields` and `organization_fields`.
    pub(crate) fn fixed(self) -> usize {
        match self {
            Kind::Groups => GROUP_IDS.len(),
            Kind::Brands => BRAND_IDS.len(),
            Kind::TicketFields => admin::FIXED_TICKET_FIELDS,
            Kind::UserFields => admin::USER_FIELDS.len(),
            Kind::OrganizationFields => admin::ORGANIZATION_FIELDS.len(),
            Kind::TicketForms => TICKET_FORM_IDS.len(),
            Kind::CustomStatuses => admin::STATUS_LABELS.len(),
            Kind::CustomRoles => admin::CUSTOM_ROLES.len(),
            _ => 0,
        }
    }

    /// Ids of the [`Kind::fixed`] records.
    fn protected(self) -> Vec<i64> {
        (0..self.fixed() as i64)
            .map(|i| self.first_id() + i)
            .collect()
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
    pub(crate) fn round_counts(self, round: &Round) -> (usize, usize, usize) {
        let scale = |n: usize, per: usize| if n == 0 { 0 } else { (n / per).max(1) };
        let per = match self {
            Kind::Posts | Kind::Articles => 4,
            Kind::GroupMemberships | Kind::OrganizationMemberships => 10,
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

    /// A catalog of records kept elsewhere (triggers), to page through them as lists do.
    pub(crate) fn of<'a>(records: impl IntoIterator<Item = (i64, &'a Value)>) -> Self {
        let mut catalog = Catalog::default();
        for (id, record) in records {
            catalog.insert(id, 0, record);
        }
        catalog
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
        Kind::TicketFields => kind.fixed() + scaled(None, 2, 500, 40),
        Kind::UserFields | Kind::OrganizationFields => kind.fixed() + scaled(None, 1, 1_000, 20),
        Kind::TicketForms => kind.fixed() + scaled(None, 1, 2_000, 20),
        Kind::CustomStatuses => kind.fixed() + scaled(None, 2, 5_000, 20),
        Kind::Macros => scaled(None, 10, 20, 500),
        Kind::Automations => scaled(None, 5, 200, 100),
        Kind::Views => scaled(None, 8, 50, 300),
        Kind::SlaPolicies => scaled(None, 3, 1_000, 20),
        Kind::GroupMemberships => scaled(None, 10, 4, 5_000),
        Kind::OrganizationMemberships => (10 + config.users / 2).min(5_000),
        Kind::Schedules => scaled(None, 2, 2_000, 10),
        Kind::CustomRoles => kind.fixed() + scaled(None, 1, 5_000, 20),
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

/// The listed records, one catalog per kind (in the order of [`Kind::ALL`]).
pub(crate) struct Content {
    catalogs: Vec<Catalog>,
}

impl Default for Content {
    fn default() -> Self {
        Content {
            catalogs: Kind::ALL.iter().map(|_| Catalog::default()).collect(),
        }
    }
}

/// The account's users and organizations, which new records may point at.
pub(crate) struct People<'a> {
    pub(crate) users: usize,
    pub(crate) organizations: &'a Table,
}

/// What a new record may point at.
pub(crate) struct Context<'a> {
    users: usize,
    organizations: &'a Table,
    categories: Vec<i64>,
    sections: Vec<i64>,
    topics: Vec<i64>,
    pub(crate) groups: Vec<i64>,
    pub(crate) ticket_fields: Vec<i64>,
}

impl Context<'_> {
    pub(crate) fn user(&self, rng: &mut StdRng) -> i64 {
        FIRST_USER_ID + rng.gen_range(0..self.users.max(1) as i64)
    }

    /// A group among the live ones.
    pub(crate) fn group(&self, rng: &mut StdRng) -> i64 {
        parent(rng, &self.groups, GROUP_IDS[0])
    }

    /// An organization of the account and its name (none when it has no organizations).
    pub(crate) fn organization(&self, rng: &mut StdRng) -> Option<(i64, String)> {
        let count = self.organizations.len();
        if count == 0 {
            return None;
        }
        let id = FIRST_ORG_ID + rng.gen_range(0..count as i64);
        let name = self
            .organizations
            .object(id)
            .and_then(|org| org.get("name").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default();
        Some((id, name))
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
    pub(crate) fn new(config: &SimConfig, people: &People, origin: i64) -> Self {
        let mut content = Self::default();
        let lo = origin - YEAR_SECS;
        let hi = origin - MIN_AGE_SECS;
        // Parents first, so children point at existing records.
        for kind in Kind::ALL {
            let count = initial_count(kind, config);
            let mut rng = stream_rng(config.seed, 0, kind.stream());
            // Crowded seconds matter for the one time export (articles); harmless elsewhere.
            let clock = Clock::new(&mut rng, (lo, hi), count, 2, 0.25);
            let context = content.context(people);
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
        &self.catalogs[kind.index()]
    }

    fn catalog_mut(&mut self, kind: Kind) -> &mut Catalog {
        &mut self.catalogs[kind.index()]
    }

    fn context<'a>(&self, people: &People<'a>) -> Context<'a> {
        let live = |kind| self.catalog(kind).live_ids(&[]);
        Context {
            users: people.users,
            organizations: people.organizations,
            categories: live(Kind::Categories),
            sections: live(Kind::Sections),
            topics: live(Kind::Topics),
            groups: live(Kind::Groups),
            ticket_fields: live(Kind::TicketFields),
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
        people: &People,
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
            let deletable = self.catalog(kind).live_ids(&kind.protected());
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
            let context = self.context(people);
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
            let context = self.context(people);
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
        kind => admin::make(kind, rng, context, id, index, created, updated),
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
        (kind, change) => admin::change(kind, map, change, n, ts, context),
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
