//! The records of the simulated account and how they change.
//!
//! Everything here is a pure function of the seed, the configured counts and the round number, so
//! two simulators built from the same [`SimConfig`] hold byte-identical records after the same
//! rounds. Each object keeps its records by id and an ordered index by (export key, id), which is
//! exactly the order Zendesk's incremental exports walk, so a page is a range scan rather than a
//! sort of the whole table on every request.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use rand::rngs::StdRng;
use rand::seq::index;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use super::activity::{Activity, TicketLog, TicketLogKind};
use super::content::{Content, People};
use super::{Round, SimConfig};

/// Host used inside records (`url` fields), so records do not depend on the port we listen on.
pub(crate) const RECORD_BASE_URL: &str = "https://simulated.zendesk.com";
/// 2024-01-01T00:00:00Z: the virtual clock's starting point.
pub(crate) const EPOCH: i64 = 1_704_067_200;
/// How far each round moves the virtual clock.
pub(crate) const ROUND_SECS: i64 = 3600;
/// Changes are kept at least this old so they are outside Zendesk's 60-second hold-back window.
pub(crate) const MIN_AGE_SECS: i64 = 120;
/// A ticket's generated_timestamp trails its updated_at by at most this much.
pub(crate) const GENERATED_LAG_MAX: i64 = 2;
pub(crate) const YEAR_SECS: i64 = 365 * 86_400;
pub(crate) const DAY_SECS: i64 = 86_400;

pub(crate) const FIRST_TICKET_ID: i64 = 1;
pub(crate) const FIRST_USER_ID: i64 = 10_000_000_000;
pub(crate) const FIRST_ORG_ID: i64 = 500_000_000_000;

pub(crate) const GROUP_IDS: [i64; 4] = [
    360_000_100_001,
    360_000_100_002,
    360_000_100_003,
    360_000_100_004,
];
pub(crate) const TICKET_FORM_IDS: [i64; 2] = [360_000_200_001, 360_000_200_002];
pub(crate) const BRAND_IDS: [i64; 2] = [360_000_300_001, 360_000_300_002];
pub(crate) const CUSTOM_STATUS_BASE: i64 = 360_000_400_000;
pub(crate) const CUSTOM_FIELD_IDS: [i64; 6] = [
    360_000_500_001,
    360_000_500_002,
    360_000_500_003,
    360_000_500_004,
    360_000_500_005,
    360_000_500_006,
];

pub(crate) const STATUSES: [&str; 6] = ["new", "open", "pending", "hold", "solved", "closed"];
const VIA_CHANNELS: [&str; 4] = ["web", "email", "api", "sample_ticket"];
const TICKET_TYPES: [&str; 4] = ["problem", "incident", "question", "task"];
pub(crate) const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];
pub(crate) const TAGS: [&str; 12] = [
    "vip",
    "billing",
    "refund",
    "login",
    "bug",
    "feature_request",
    "shipping",
    "sample",
    "support",
    "zendesk",
    "escalated",
    "churn_risk",
];
const SUBJECT_PREFIXES: [&str; 5] = ["", "", "Re: ", "Fwd: ", "URGENT: "];
const SUBJECT_TOPICS: [&str; 10] = [
    "Cannot log in",
    "Refund for order {n}",
    "Café order missing ✓",
    "Question about the \"Pro\" plan",
    "Invoice {n} is wrong",
    "Password reset",
    "Feature request: dark mode",
    "Lieferung verspätet",
    "Problème de facturation",
    "配送について",
];
pub(crate) const DESCRIPTIONS: [&str; 9] = [
    "Hi,\nI can't log in since this morning.\nThanks",
    "The café order #{n} arrived cold ✓ — please refund.",
    "He said \"it works on my machine\"; it doesn't.",
    "Grüße aus München: die Rechnung {n} ist falsch.",
    "注文した商品がまだ届きません。",
    "Emoji test 🚀🔥 and a tab\tcharacter.",
    "Line one\r\nLine two\r\n\r\nSignature: — Zoë",
    "Backslash \\ path C:\\Users\\demo and <b>html</b> & ampersands",
    "test",
];
pub(crate) const FIRST_NAMES: [&str; 10] = [
    "Ana", "José", "Zoë", "Liam", "Mei", "Olu", "Søren", "Priya", "Noah", "Émilie",
];
pub(crate) const LAST_NAMES: [&str; 10] = [
    "Müller", "Smith", "O'Brien", "García", "Tanaka", "Nowak", "Dubois", "Kim", "Okafor", "Rossi",
];
pub(crate) const EMAIL_DOMAINS: [&str; 3] = ["example.com", "example.org", "kunden.example.de"];
pub(crate) const TIME_ZONES: [(&str, &str); 5] = [
    ("America/New_York", "America/New_York"),
    ("Osaka", "Asia/Tokyo"),
    ("London", "Europe/London"),
    ("Pacific Time (US & Canada)", "America/Los_Angeles"),
    ("Berlin", "Europe/Berlin"),
];
const LOCALES: [(i64, &str); 4] = [(1, "en-US"), (8, "de"), (16, "fr"), (2, "es")];
const ORG_ADJECTIVES: [&str; 8] = [
    "Rebel",
    "Imperial",
    "Café",
    "Münchner",
    "Nordic",
    "東京",
    "Blue",
    "O'Neil's",
];
const ORG_NOUNS: [&str; 6] = ["Alliance", "Senate", "Traders", "GmbH", "Labs", "Holdings"];
pub(crate) const REGIONS: [&str; 4] = ["emea", "amer", "apac", "latam"];
pub(crate) const TIERS: [&str; 3] = ["bronze", "silver", "gold"];

/// The three objects the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Object {
    Tickets,
    Users,
    Organizations,
}

impl Object {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        match name {
            "tickets" => Some(Self::Tickets),
            "users" => Some(Self::Users),
            "organizations" => Some(Self::Organizations),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tickets => "tickets",
            Self::Users => "users",
            Self::Organizations => "organizations",
        }
    }

    /// Distinguishes the random streams of the objects within one round.
    fn stream(self) -> u64 {
        match self {
            Self::Tickets => 1,
            Self::Users => 2,
            Self::Organizations => 3,
        }
    }
}

struct Entry {
    /// The export order key: generated_timestamp for tickets, updated_at for the others.
    key: i64,
    deleted: bool,
    /// The record as compact JSON: a tenth of the memory of a `Value` tree, and pages are
    /// served by concatenation.
    json: Box<str>,
}

/// One object's records, by id and by export position.
#[derive(Default)]
pub(crate) struct Table {
    records: BTreeMap<i64, Entry>,
    order: BTreeSet<(i64, i64)>,
}

impl Table {
    pub(crate) fn insert(&mut self, id: i64, key: i64, value: &Value) {
        let entry = Entry {
            key,
            deleted: false,
            json: value.to_string().into_boxed_str(),
        };
        if let Some(old) = self.records.insert(id, entry) {
            self.order.remove(&(old.key, id));
        }
        self.order.insert((key, id));
    }

    /// Changes a record in place and moves it to its new export position.
    pub(crate) fn update(
        &mut self,
        id: i64,
        key: i64,
        delete: bool,
        change: impl FnOnce(&mut Map<String, Value>),
    ) {
        let Some(entry) = self.records.get_mut(&id) else {
            return;
        };
        // The text was written by `insert` from an object, so it parses back into one, unless a
        // test replaced it (`replace_json`) with something else: then the record is left alone.
        let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(&entry.json) else {
            return;
        };
        change(&mut map);
        entry.json = Value::Object(map).to_string().into_boxed_str();
        self.order.remove(&(entry.key, id));
        entry.key = key;
        entry.deleted |= delete;
        self.order.insert((key, id));
    }

    /// Replaces a record's text, keeping its export position; false when there is no such id.
    pub(crate) fn replace_json(&mut self, id: i64, json: String) -> bool {
        match self.records.get_mut(&id) {
            Some(entry) => {
                entry.json = json.into_boxed_str();
                true
            }
            None => false,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// One record as JSON text.
    pub(crate) fn get(&self, id: i64) -> Option<&str> {
        self.records.get(&id).map(|e| &*e.json)
    }

    /// Every record, sorted by id.
    pub(crate) fn values(&self) -> impl Iterator<Item = &str> {
        self.records.values().map(|e| &*e.json)
    }

    /// Records (as JSON text) strictly after the export position `(key, id)`, in export order.
    pub(crate) fn after(&self, key: i64, id: i64) -> impl Iterator<Item = (i64, i64, &str)> {
        self.order
            .range((Bound::Excluded((key, id)), Bound::Unbounded))
            .filter_map(move |&(k, i)| self.records.get(&i).map(|e| (k, i, &*e.json)))
    }

    /// One record parsed back into an object; None when there is no such id or its text (put
    /// there by `replace_json`) is not a JSON object.
    pub(crate) fn object(&self, id: i64) -> Option<Map<String, Value>> {
        match serde_json::from_str(self.get(id)?) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        }
    }

    /// Whether a record is deleted (by the object's delete rule); false for unknown ids.
    pub(crate) fn is_deleted(&self, id: i64) -> bool {
        self.records.get(&id).is_some_and(|e| e.deleted)
    }

    /// Ids of deleted records, in id order.
    pub(crate) fn deleted_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.records
            .iter()
            .filter(|(_, e)| e.deleted)
            .map(|(id, _)| *id)
    }

    /// Ids of records that are not deleted, excluding `skip`, in id order.
    fn live_ids(&self, skip: Option<i64>) -> Vec<i64> {
        self.records
            .iter()
            .filter(|(id, e)| !e.deleted && Some(**id) != skip)
            .map(|(id, _)| *id)
            .collect()
    }
}

/// What kind of change a [`Change`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Create,
    Update,
    Delete,
}

/// Where a change came from: triggers run on a round's and an update's ticket changes, not on
/// imported tickets (Zendesk's import bypasses them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Round,
    Import,
    Update,
}

/// A comment a change added, as webhook events describe it.
#[derive(Debug, Clone)]
pub(crate) struct AddedComment {
    pub(crate) id: i64,
    pub(crate) author_id: i64,
    pub(crate) body: String,
    pub(crate) public: bool,
}

/// One visible change of a record of tickets, users or organizations, with the record before
/// (None for a create) and after it: what webhook deliveries are made of.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub(crate) object: Object,
    pub(crate) kind: ChangeKind,
    pub(crate) source: Source,
    pub(crate) id: i64,
    /// When it happened (unix seconds).
    pub(crate) ts: i64,
    pub(crate) before: Option<Map<String, Value>>,
    pub(crate) after: Map<String, Value>,
    pub(crate) comments: Vec<AddedComment>,
}

/// Mean number of records on one hot second: enough to exercise boundary duplicates, few enough
/// that a second never outgrows a time-export page of 1000 (which would stall a real client).
const HOT_SECOND_CROWD: f64 = 20.0;

/// Picks timestamps in `[lo, hi]`; a share of them fall on a few "hot" seconds so that several
/// records share a second, which is what produces boundary duplicates in time exports.
pub(crate) struct Clock {
    lo: i64,
    hi: i64,
    hot: Vec<i64>,
    hot_share: f64,
}

impl Clock {
    /// A clock for about `records` picks, with at least `min_hot` hot seconds.
    pub(crate) fn new(
        rng: &mut StdRng,
        (lo, hi): (i64, i64),
        records: usize,
        min_hot: usize,
        hot_share: f64,
    ) -> Self {
        let hi = hi.max(lo);
        let hot_seconds =
            ((records as f64 * hot_share / HOT_SECOND_CROWD).ceil() as usize).max(min_hot);
        let hot = (0..hot_seconds).map(|_| rng.gen_range(lo..=hi)).collect();
        Self {
            lo,
            hi,
            hot,
            hot_share,
        }
    }

    pub(crate) fn pick(&self, rng: &mut StdRng) -> i64 {
        if !self.hot.is_empty() && rng.gen_bool(self.hot_share) {
            self.hot[rng.gen_range(0..self.hot.len())]
        } else {
            rng.gen_range(self.lo..=self.hi)
        }
    }
}

/// The real time, unix seconds.
pub(crate) fn real_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The whole account.
pub(crate) struct State {
    seed: u64,
    pub(crate) now: i64,
    clock: super::SimClock,
    round: u64,
    pub(crate) tickets: Table,
    pub(crate) users: Table,
    pub(crate) organizations: Table,
    /// Groups, brands, Help Center and community records (their own random streams).
    pub(crate) content: Content,
    /// What follows from tickets' history: events, comments, metric sets, side conversations.
    pub(crate) activity: Activity,
    /// How rounds choose the tickets they update ([`super::Simulator::set_recent_bias`]).
    pub(crate) bias: Option<super::RecentBias>,
    /// Bulk jobs (imports, update_many) and what they did.
    pub(crate) jobs: super::jobs::Jobs,
    /// The times the last round's changes were dated in (for the records kept apart from the
    /// state: triggers).
    pub(crate) window: (i64, i64),
    /// The tag listing's cap and the tags it served (`tags.rs`).
    pub(crate) tags: super::tags::Tags,
    /// Satisfaction ratings (`ratings.rs`).
    pub(crate) ratings: super::ratings::Ratings,
}

impl State {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let origin = match config.clock {
            super::SimClock::Fixed => EPOCH,
            super::SimClock::Now => real_now(),
        };
        let mut state = Self {
            seed: config.seed,
            now: origin,
            clock: config.clock,
            round: 0,
            tickets: Table::default(),
            users: Table::default(),
            organizations: Table::default(),
            content: Content::default(),
            activity: Activity::default(),
            bias: None,
            jobs: super::jobs::Jobs::default(),
            window: (origin, origin),
            tags: super::tags::Tags::new(config.tags_listed),
            ratings: super::ratings::Ratings::default(),
        };
        let lo = origin - YEAR_SECS;
        let hi = origin - MIN_AGE_SECS - GENERATED_LAG_MAX;

        let mut rng = state.rng(Object::Organizations);
        let clock = Clock::new(&mut rng, (lo, hi), config.organizations, 3, 0.25);
        for _ in 0..config.organizations {
            let updated = clock.pick(&mut rng);
            let created = created_before(&mut rng, updated, lo);
            state.create_organization(&mut rng, created, updated);
        }

        let mut rng = state.rng(Object::Users);
        let clock = Clock::new(&mut rng, (lo, hi), config.users, 3, 0.25);
        // The admin behind /users/me always exists, even with `users: 0`.
        for _ in 0..config.users.max(1) {
            let updated = clock.pick(&mut rng);
            let created = created_before(&mut rng, updated, lo);
            state.create_user(&mut rng, &config.email, created, updated);
        }

        let mut rng = state.rng(Object::Tickets);
        let clock = Clock::new(&mut rng, (lo, hi), config.tickets, 3, 0.25);
        for _ in 0..config.tickets {
            let updated = clock.pick(&mut rng);
            let created = created_before(&mut rng, updated, lo);
            let generated = updated + rng.gen_range(0..=GENERATED_LAG_MAX);
            state.create_ticket(&mut rng, created, updated, generated);
        }

        // Everything new draws from streams of its own, so the records above do not depend on it.
        let users = state.users.len();
        state.activity = Activity::new(config.seed, &state.tickets, users);
        state.content = Content::new(
            config,
            &People {
                users,
                organizations: &state.organizations,
            },
            origin,
        );
        state.ratings =
            super::ratings::Ratings::new(config.seed, config.tickets, users, origin, hi);
        state
    }

    /// Moves the clock for a change happening now: [`SimClock::Fixed`] by `fixed_step`
    /// seconds, [`SimClock::Now`] to the real time (at least `min_step` on). Returns the new now.
    pub(crate) fn tick(&mut self, fixed_step: i64, min_step: i64) -> i64 {
        self.now = match self.clock {
            super::SimClock::Fixed => self.now + fixed_step,
            super::SimClock::Now => real_now().max(self.now + min_step),
        };
        self.now
    }

    pub(crate) fn table(&self, object: Object) -> &Table {
        match object {
            Object::Tickets => &self.tickets,
            Object::Users => &self.users,
            Object::Organizations => &self.organizations,
        }
    }

    pub(crate) fn table_mut(&mut self, object: Object) -> &mut Table {
        match object {
            Object::Tickets => &mut self.tickets,
            Object::Users => &mut self.users,
            Object::Organizations => &mut self.organizations,
        }
    }

    /// The admin user answering /users/me, as JSON text.
    pub(crate) fn admin(&self) -> Option<&str> {
        self.users.get(FIRST_USER_ID)
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Rounds applied so far.
    pub(crate) fn rounds(&self) -> u64 {
        self.round
    }

    /// A random stream per (seed, round, object), so rounds are reproducible one by one.
    fn rng(&self, object: Object) -> StdRng {
        stream_rng(self.seed, self.round, object.stream())
    }

    /// Applies a round; returns its visible changes of tickets, users and organizations.
    pub(crate) fn apply_round(&mut self, round: &Round, admin_email: &str) -> Vec<Change> {
        let window_start = self.now;
        self.round += 1;
        // At least the generated lag on, so no change of the round is dated after its end.
        self.tick(ROUND_SECS, GENERATED_LAG_MAX + 1);
        // A fixed clock keeps changes outside the hold-back; a real one dates them up to now.
        let min_age = match self.clock {
            super::SimClock::Fixed => MIN_AGE_SECS,
            super::SimClock::Now => 0,
        };
        let hi = self.now - min_age - GENERATED_LAG_MAX;
        let mut changes = Vec::new();
        // Organizations first so new users and tickets may point at new organizations.
        self.organizations_round(round, window_start, hi, &mut changes);
        self.users_round(round, window_start, hi, admin_email, &mut changes);
        let log = self.tickets_round(round, window_start, hi);
        let users = self.users.len();
        self.activity.apply_round(self.round, &log, users);
        let people = People {
            users,
            organizations: &self.organizations,
        };
        self.content
            .apply_round(self.seed, self.round, round, (window_start, hi), &people);
        self.window = (window_start, hi);
        self.ratings.round(
            self.seed,
            self.round,
            round.creates,
            round.updates,
            (self.tickets.len(), users),
            (window_start, hi),
        );
        changes.extend(log.into_iter().filter_map(|entry| {
            let id = entry.after.get("id").and_then(Value::as_i64)?;
            Some(Change {
                object: Object::Tickets,
                kind: match entry.kind {
                    TicketLogKind::Create => ChangeKind::Create,
                    TicketLogKind::Update => ChangeKind::Update,
                    TicketLogKind::Delete => ChangeKind::Delete,
                },
                source: Source::Round,
                id,
                ts: entry.ts,
                before: entry.before,
                after: entry.after,
                comments: Vec::new(),
            })
        }));
        changes
    }

    /// Records a change of a user or organization (`before` read before it).
    fn changed(
        &self,
        changes: &mut Vec<Change>,
        object: Object,
        kind: ChangeKind,
        id: i64,
        ts: i64,
        before: Option<Map<String, Value>>,
    ) {
        if let Some(after) = self.table(object).object(id) {
            changes.push(Change {
                object,
                kind,
                source: Source::Round,
                id,
                ts,
                before,
                after,
                comments: Vec::new(),
            });
        }
    }

    /// Silent updates are ordinary updates for organizations.
    fn organizations_round(
        &mut self,
        round: &Round,
        window_start: i64,
        hi: i64,
        changes_out: &mut Vec<Change>,
    ) {
        let changes = round.updates + round.silent_updates;
        let mut rng = self.rng(Object::Organizations);
        let clock = Clock::new(&mut rng, (window_start, hi), touched(round), 2, 0.4);
        let (updates, deletes) =
            pick_targets(&mut rng, &self.organizations, None, changes, round.deletes);
        for id in updates {
            let ts = clock.pick(&mut rng);
            let change = rng.gen_range(0..7);
            let extra = self.random_group(&mut rng);
            let fields = organization_fields(&mut rng, ts);
            let noun = *pick(&mut rng, &ORG_NOUNS);
            let renamed = format!(
                "{} {noun} {}",
                pick(&mut rng, &ORG_ADJECTIVES),
                id - FIRST_ORG_ID + 1
            );
            let note = rng.gen_range(0..1000);
            let before = self.organizations.object(id);
            self.organizations.update(id, ts, false, |map| {
                set_updated(map, ts);
                match change {
                    0 => {
                        map.insert("name".into(), json!(renamed));
                    }
                    1 => toggle_tag(map, TAGS[note as usize % TAGS.len()]),
                    2 => push_str(
                        map,
                        "domain_names",
                        format!("{}-{note}.example.net", noun.to_lowercase()),
                    ),
                    3 => {
                        map.insert(
                            "notes".into(),
                            json!(format!("Call back re: case {note}.\n— café ✓")),
                        );
                    }
                    4 => {
                        map.insert("organization_fields".into(), fields);
                    }
                    5 => {
                        map.insert("group_id".into(), extra);
                    }
                    _ => flip(map, "shared_tickets"),
                }
            });
            let object = Object::Organizations;
            self.changed(changes_out, object, ChangeKind::Update, id, ts, before);
        }
        for id in deletes {
            let ts = clock.pick(&mut rng);
            let before = self.organizations.object(id);
            self.organizations.update(id, ts, true, |map| {
                set_updated(map, ts);
                map.insert("deleted_at".into(), json!(rfc3339(ts)));
            });
            let object = Object::Organizations;
            self.changed(changes_out, object, ChangeKind::Delete, id, ts, before);
        }
        for _ in 0..round.creates {
            let ts = clock.pick(&mut rng);
            let id = FIRST_ORG_ID + self.organizations.len() as i64;
            self.create_organization(&mut rng, ts, ts);
            let object = Object::Organizations;
            self.changed(changes_out, object, ChangeKind::Create, id, ts, None);
        }
    }

    /// Silent updates are ordinary updates for users; the admin is never changed.
    fn users_round(
        &mut self,
        round: &Round,
        window_start: i64,
        hi: i64,
        admin_email: &str,
        changes_out: &mut Vec<Change>,
    ) {
        let changes = round.updates + round.silent_updates;
        let mut rng = self.rng(Object::Users);
        let clock = Clock::new(&mut rng, (window_start, hi), touched(round), 2, 0.4);
        let (updates, deletes) = pick_targets(
            &mut rng,
            &self.users,
            Some(FIRST_USER_ID),
            changes,
            round.deletes,
        );
        for id in updates {
            let ts = clock.pick(&mut rng);
            let change = rng.gen_range(0..8);
            let (first, last) = (pick(&mut rng, &FIRST_NAMES), pick(&mut rng, &LAST_NAMES));
            let phone = format!("+1555{:07}", rng.gen_range(0..10_000_000));
            let fields = user_fields(&mut rng, ts);
            let (tz, iana) = *pick(&mut rng, &TIME_ZONES);
            let note = rng.gen_range(0..1000);
            let before = self.users.object(id);
            self.users.update(id, ts, false, |map| {
                set_updated(map, ts);
                match change {
                    0 => {
                        map.insert("name".into(), json!(format!("{first} {last}")));
                    }
                    1 => {
                        map.insert("phone".into(), json!(phone));
                        map.insert("shared_phone_number".into(), json!(false));
                    }
                    2 => toggle_tag(map, TAGS[note as usize % TAGS.len()]),
                    3 => {
                        map.insert("user_fields".into(), fields);
                    }
                    4 => {
                        map.insert("time_zone".into(), json!(tz));
                        map.insert("iana_time_zone".into(), json!(iana));
                    }
                    5 => {
                        map.insert("last_login_at".into(), json!(rfc3339(ts)));
                    }
                    6 => flip(map, "suspended"),
                    _ => {
                        map.insert(
                            "notes".into(),
                            json!(format!("Spoke on the phone, ref \"{note}\".")),
                        );
                    }
                }
            });
            self.changed(
                changes_out,
                Object::Users,
                ChangeKind::Update,
                id,
                ts,
                before,
            );
        }
        for id in deletes {
            let ts = clock.pick(&mut rng);
            let before = self.users.object(id);
            self.users.update(id, ts, true, |map| {
                set_updated(map, ts);
                map.insert("active".into(), json!(false));
            });
            self.changed(
                changes_out,
                Object::Users,
                ChangeKind::Delete,
                id,
                ts,
                before,
            );
        }
        for _ in 0..round.creates {
            let ts = clock.pick(&mut rng);
            let id = FIRST_USER_ID + self.users.len() as i64;
            self.create_user(&mut rng, admin_email, ts, ts);
            self.changed(changes_out, Object::Users, ChangeKind::Create, id, ts, None);
        }
    }

    /// Returns the visible changes (updates, deletes, creates, in that order) with the ticket
    /// before and after each, for the events that record them; system updates are not in it.
    fn tickets_round(&mut self, round: &Round, window_start: i64, hi: i64) -> Vec<TicketLog> {
        let mut log = Vec::new();
        let changes = round.updates + round.silent_updates;
        let mut rng = self.rng(Object::Tickets);
        let clock = Clock::new(&mut rng, (window_start, hi), touched(round), 2, 0.4);
        let (mut updates, deletes) = match self.bias {
            None => pick_targets(&mut rng, &self.tickets, None, changes, round.deletes),
            Some(bias) => pick_biased(&mut rng, &self.tickets, bias, changes, round.deletes),
        };
        let silent = updates.split_off(round.updates.min(updates.len()));
        for id in updates {
            let ts = clock.pick(&mut rng);
            let generated = ts + rng.gen_range(0..=GENERATED_LAG_MAX);
            let changes = ticket_changes(&mut rng, self.users.len(), ts);
            let before = self.tickets.object(id);
            self.tickets.update(id, generated, false, |map| {
                set_updated(map, ts);
                map.insert("generated_timestamp".into(), json!(generated));
                for (field, value) in changes {
                    match field {
                        TicketChange::Set(name) => {
                            map.insert(name.into(), value);
                        }
                        TicketChange::Status => {
                            let status = value.as_str().unwrap_or("open");
                            map.insert("custom_status_id".into(), json!(custom_status_id(status)));
                            map.insert("status".into(), value);
                        }
                        TicketChange::Subject => {
                            map.insert("raw_subject".into(), value.clone());
                            map.insert("subject".into(), value);
                        }
                        TicketChange::CustomFields => {
                            map.insert("fields".into(), value.clone());
                            map.insert("custom_fields".into(), value);
                        }
                        TicketChange::Tag => {
                            if let Some(tag) = value.as_str() {
                                toggle_tag(map, tag);
                            }
                        }
                    }
                }
            });
            log.extend(self.logged(TicketLogKind::Update, id, ts, before));
        }
        for id in silent {
            // A system update (e.g. an automation) moves only generated_timestamp.
            let generated = clock.pick(&mut rng) + rng.gen_range(0..=GENERATED_LAG_MAX);
            self.tickets.update(id, generated, false, |map| {
                map.insert("generated_timestamp".into(), json!(generated));
                let tagged = map
                    .get("tags")
                    .and_then(Value::as_array)
                    .is_some_and(|tags| tags.iter().any(|t| t == "system_touched"));
                if tagged {
                    flip(map, "is_public");
                } else {
                    toggle_tag(map, "system_touched");
                }
            });
        }
        for id in deletes {
            let ts = clock.pick(&mut rng);
            let generated = ts + rng.gen_range(0..=GENERATED_LAG_MAX);
            let before = self.tickets.object(id);
            self.tickets.update(id, generated, true, |map| {
                set_updated(map, ts);
                map.insert("generated_timestamp".into(), json!(generated));
                map.insert("status".into(), json!("deleted"));
            });
            log.extend(self.logged(TicketLogKind::Delete, id, ts, before));
        }
        for _ in 0..round.creates {
            let ts = clock.pick(&mut rng);
            let generated = ts + rng.gen_range(0..=GENERATED_LAG_MAX);
            let id = FIRST_TICKET_ID + self.tickets.len() as i64;
            self.create_ticket(&mut rng, ts, ts, generated);
            log.extend(self.logged(TicketLogKind::Create, id, ts, None));
        }
        log
    }

    /// A log entry for a ticket changed at `ts`; None when the record is not (or was not) a JSON
    /// object, which only `override_record` can cause.
    fn logged(
        &self,
        kind: TicketLogKind,
        id: i64,
        ts: i64,
        before: Option<Map<String, Value>>,
    ) -> Option<TicketLog> {
        if kind != TicketLogKind::Create && before.is_none() {
            return None;
        }
        Some(TicketLog {
            kind,
            ts,
            before,
            after: self.tickets.object(id)?,
        })
    }

    fn random_user(&self, rng: &mut StdRng) -> i64 {
        FIRST_USER_ID + rng.gen_range(0..self.users.len().max(1) as i64)
    }

    fn random_org(&self, rng: &mut StdRng) -> Value {
        let orgs = self.organizations.len() as i64;
        if orgs == 0 || rng.gen_bool(0.3) {
            Value::Null
        } else {
            json!(FIRST_ORG_ID + rng.gen_range(0..orgs))
        }
    }

    fn random_group(&self, rng: &mut StdRng) -> Value {
        if rng.gen_bool(0.4) {
            Value::Null
        } else {
            json!(*pick(rng, &GROUP_IDS))
        }
    }

    fn random_user_ids(&self, rng: &mut StdRng, max: usize) -> Value {
        let n = rng.gen_range(0..=max);
        Value::Array((0..n).map(|_| json!(self.random_user(rng))).collect())
    }

    fn create_ticket(&mut self, rng: &mut StdRng, created: i64, updated: i64, generated: i64) {
        let id = FIRST_TICKET_ID + self.tickets.len() as i64;
        let status = *pick(rng, &STATUSES);
        let subject = subject(rng);
        let requester = self.random_user(rng);
        let submitter = if rng.gen_bool(0.8) {
            requester
        } else {
            self.random_user(rng)
        };
        let assignee = if rng.gen_bool(0.3) {
            Value::Null
        } else {
            json!(self.random_user(rng))
        };
        let custom_fields = custom_fields(rng, created);
        let satisfaction = if rng.gen_bool(0.15) {
            json!({"score": pick(rng, &["good", "bad"]), "id": 700_000_000_000 + id})
        } else {
            Value::Null
        };
        let value = json!({
            "url": format!("{RECORD_BASE_URL}/api/v2/tickets/{id}.json"),
            "id": id,
            "external_id": optional(rng, 0.3, |rng| json!(format!("crm-{}", rng.gen_range(100_000..1_000_000)))),
            "via": {
                "channel": pick(rng, &VIA_CHANNELS),
                "source": {"from": {}, "to": {}, "rel": null},
            },
            "created_at": rfc3339(created),
            "updated_at": rfc3339(updated),
            "type": optional(rng, 0.7, |rng| json!(pick(rng, &TICKET_TYPES))),
            "subject": subject,
            "raw_subject": subject,
            "description": description(rng),
            "priority": optional(rng, 0.7, |rng| json!(pick(rng, &PRIORITIES))),
            "status": status,
            "recipient": optional(rng, 0.5, |_| json!("support@simulated.zendesk.com")),
            "requester_id": requester,
            "submitter_id": submitter,
            "assignee_id": assignee,
            "organization_id": self.random_org(rng),
            "group_id": self.random_group(rng),
            "collaborator_ids": self.random_user_ids(rng, 2),
            "follower_ids": self.random_user_ids(rng, 2),
            "email_cc_ids": self.random_user_ids(rng, 1),
            "forum_topic_id": null,
            "problem_id": null,
            "has_incidents": rng.gen_bool(0.05),
            "is_public": rng.gen_bool(0.9),
            "due_at": optional(rng, 0.15, |rng| json!(rfc3339(created + rng.gen_range(1..15) * DAY_SECS))),
            "tags": tags(rng, 4),
            "custom_fields": custom_fields,
            "satisfaction_rating": satisfaction,
            "sharing_agreement_ids": [],
            "custom_status_id": custom_status_id(status),
            "fields": custom_fields,
            "followup_ids": [],
            "ticket_form_id": pick(rng, &TICKET_FORM_IDS),
            "brand_id": pick(rng, &BRAND_IDS),
            "allow_channelback": false,
            "allow_attachments": true,
            "from_messaging_channel": rng.gen_bool(0.05),
            "generated_timestamp": generated,
        });
        self.tickets.insert(id, generated, &value);
    }

    pub(crate) fn create_user(
        &mut self,
        rng: &mut StdRng,
        admin_email: &str,
        created: i64,
        updated: i64,
    ) {
        let index = self.users.len() as i64;
        let id = FIRST_USER_ID + index;
        let role = if index == 0 {
            "admin"
        } else {
            match rng.gen_range(0..20) {
                0 => "admin",
                1..=3 => "agent",
                _ => "end-user",
            }
        };
        let staff = role != "end-user";
        let (first, last) = (*pick(rng, &FIRST_NAMES), *pick(rng, &LAST_NAMES));
        let name = if index == 0 {
            String::from("Demo Admin")
        } else {
            format!("{first} {last}")
        };
        let email = if index == 0 {
            json!(admin_email)
        } else if rng.gen_bool(0.05) {
            Value::Null
        } else {
            json!(format!("user{index}@{}", pick(rng, &EMAIL_DOMAINS)))
        };
        let (tz, iana) = *pick(rng, &TIME_ZONES);
        let phone = optional(rng, 0.3, |rng| {
            json!(format!("+1555{:07}", rng.gen_range(0..10_000_000)))
        });
        let shared_phone = if phone.is_null() {
            Value::Null
        } else {
            json!(false)
        };
        let (locale_id, locale) = *pick(rng, &LOCALES);
        let role_type = match role {
            "admin" => json!(4),
            "agent" => pick(rng, &[Value::Null, json!(0), json!(1)]).clone(),
            _ => Value::Null,
        };
        let custom_role_id = if role_type == json!(0) {
            json!(360_000_600_000_i64 + rng.gen_range(1..4))
        } else {
            Value::Null
        };
        let ticket_restriction = match role {
            "end-user" => json!("requested"),
            "agent" => pick(rng, &[json!("assigned"), json!("groups"), Value::Null]).clone(),
            _ => Value::Null,
        };
        let restricted_agent =
            role == "end-user" || (role == "agent" && !ticket_restriction.is_null());
        let value = json!({
            "id": id,
            "url": format!("{RECORD_BASE_URL}/api/v2/users/{id}.json"),
            "name": name,
            "email": email,
            "created_at": rfc3339(created),
            "updated_at": rfc3339(updated),
            "time_zone": tz,
            "iana_time_zone": iana,
            "phone": phone,
            "shared_phone_number": shared_phone,
            "photo": optional(rng, 0.3, |rng| photo(rng, id)),
            "locale_id": locale_id,
            "locale": locale,
            "organization_id": self.random_org(rng),
            "role": role,
            "verified": rng.gen_bool(0.7),
            "external_id": optional(rng, 0.2, |rng| json!(format!("sso-{:08x}", rng.gen::<u32>()))),
            "tags": tags(rng, 3),
            "alias": if staff && rng.gen_bool(0.3) { json!("Support Hero") } else { Value::Null },
            "active": true,
            "shared": false,
            "shared_agent": false,
            "last_login_at": optional(rng, 0.6, |rng| json!(rfc3339(rng.gen_range(created..=updated)))),
            "two_factor_auth_enabled": if staff { json!(rng.gen_bool(0.5)) } else { Value::Null },
            "signature": if staff { json!(format!("Best,\n{first}")) } else { Value::Null },
            "details": optional(rng, 0.2, |_| json!("Prefers email; \"do not call\".")),
            "notes": optional(rng, 0.2, |_| json!("Met at the café ✓\nFollow up in Q3.")),
            "role_type": role_type,
            "custom_role_id": custom_role_id,
            "moderator": staff && rng.gen_bool(0.3),
            "ticket_restriction": ticket_restriction,
            "only_private_comments": false,
            "restricted_agent": restricted_agent,
            "suspended": rng.gen_bool(0.02),
            "chat_only": false,
            "default_group_id": if staff { json!(*pick(rng, &GROUP_IDS)) } else { Value::Null },
            "report_csv": role == "admin",
            "user_fields": user_fields(rng, updated),
        });
        self.users.insert(id, updated, &value);
    }

    fn create_organization(&mut self, rng: &mut StdRng, created: i64, updated: i64) {
        let index = self.organizations.len() as i64;
        let id = FIRST_ORG_ID + index;
        let name = format!(
            "{} {} {}",
            pick(rng, &ORG_ADJECTIVES),
            pick(rng, &ORG_NOUNS),
            index + 1
        );
        let domains = (0..rng.gen_range(0..=2))
            .map(|n| json!(format!("org{index}-{n}.example.com")))
            .collect::<Vec<_>>();
        let value = json!({
            "url": format!("{RECORD_BASE_URL}/api/v2/organizations/{id}.json"),
            "id": id,
            "name": name,
            "shared_tickets": rng.gen_bool(0.3),
            "shared_comments": rng.gen_bool(0.2),
            "external_id": optional(rng, 0.3, |rng| json!(format!("acct-{}", rng.gen_range(1000..10_000)))),
            "created_at": rfc3339(created),
            "updated_at": rfc3339(updated),
            "deleted_at": null,
            "domain_names": domains,
            "details": optional(rng, 0.3, |_| json!("Key account since 2019")),
            "notes": optional(rng, 0.3, |_| json!("Prefers email.\nCall only in emergencies — \"really\".")),
            "group_id": self.random_group(rng),
            "tags": tags(rng, 2),
            "organization_fields": organization_fields(rng, updated),
        });
        self.organizations.insert(id, updated, &value);
    }
}

/// What an ordinary ticket update changes.
enum TicketChange {
    Set(&'static str),
    Status,
    Subject,
    CustomFields,
    Tag,
}

/// One to three visible changes, drawn up front so the closure that applies them borrows nothing.
fn ticket_changes(rng: &mut StdRng, users: usize, ts: i64) -> Vec<(TicketChange, Value)> {
    let random_user =
        |rng: &mut StdRng| json!(FIRST_USER_ID + rng.gen_range(0..users.max(1) as i64));
    let amount = rng.gen_range(1..=3);
    let kinds = index::sample(rng, 8, amount).into_vec();
    let mut changes = Vec::with_capacity(kinds.len());
    for kind in kinds {
        let change = match kind {
            0 => (
                TicketChange::Status,
                json!(pick(rng, &["open", "pending", "hold", "solved", "closed"])),
            ),
            1 => (
                TicketChange::Set("priority"),
                optional(rng, 0.8, |rng| json!(pick(rng, &PRIORITIES))),
            ),
            2 => (TicketChange::Tag, json!(pick(rng, &TAGS))),
            3 => (TicketChange::Subject, json!(subject(rng))),
            4 => (
                TicketChange::Set("assignee_id"),
                optional(rng, 0.8, random_user),
            ),
            5 => (TicketChange::CustomFields, custom_fields(rng, ts)),
            6 => (
                TicketChange::Set("due_at"),
                optional(rng, 0.5, |rng| {
                    json!(rfc3339(ts + rng.gen_range(1..15) * DAY_SECS))
                }),
            ),
            _ => (
                TicketChange::Set("collaborator_ids"),
                Value::Array(
                    (0..rng.gen_range(0..=3))
                        .map(|_| random_user(rng))
                        .collect(),
                ),
            ),
        };
        changes.push(change);
    }
    changes
}

/// How many records of one object a round changes or creates.
fn touched(round: &Round) -> usize {
    round.creates + round.updates + round.silent_updates + round.deletes
}

/// Chooses distinct live records for `changes` updates and then `deletes` deletions.
fn pick_targets(
    rng: &mut StdRng,
    table: &Table,
    skip: Option<i64>,
    changes: usize,
    deletes: usize,
) -> (Vec<i64>, Vec<i64>) {
    let live = table.live_ids(skip);
    let wanted = (changes + deletes).min(live.len());
    let mut chosen: Vec<i64> = index::sample(rng, live.len(), wanted)
        .into_iter()
        .map(|i| live[i])
        .collect();
    let deleted = chosen.split_off(changes.min(chosen.len()));
    (chosen, deleted)
}

/// [`pick_targets`], with `bias.share` of the changes among the newest `bias.newest` of the live
/// records (by id) and the rest among the older ones; deletions anywhere.
fn pick_biased(
    rng: &mut StdRng,
    table: &Table,
    bias: super::RecentBias,
    changes: usize,
    deletes: usize,
) -> (Vec<i64>, Vec<i64>) {
    let live = table.live_ids(None);
    let newest = ((live.len() as f64 * bias.newest.clamp(0.0, 1.0)) as usize).min(live.len());
    let (old, recent) = live.split_at(live.len() - newest);
    let wanted_recent = ((changes as f64 * bias.share.clamp(0.0, 1.0)) as usize).min(recent.len());
    let wanted_old = (changes - wanted_recent).min(old.len());
    let mut chosen: Vec<i64> = index::sample(rng, recent.len(), wanted_recent)
        .into_iter()
        .map(|i| recent[i])
        .chain(
            index::sample(rng, old.len(), wanted_old)
                .into_iter()
                .map(|i| old[i]),
        )
        .collect();
    let taken: BTreeSet<i64> = chosen.iter().copied().collect();
    let rest: Vec<i64> = live
        .iter()
        .copied()
        .filter(|id| !taken.contains(id))
        .collect();
    let deleted: Vec<i64> = index::sample(rng, rest.len(), deletes.min(rest.len()))
        .into_iter()
        .map(|i| rest[i])
        .collect();
    // Visible and silent updates both reach recent and old tickets.
    rand::seq::SliceRandom::shuffle(chosen.as_mut_slice(), rng);
    (chosen, deleted)
}

/// A random stream per (seed, round, stream number). Streams 1-3 are the tickets', users' and
/// organizations'; everything added later uses numbers of its own, so it never shifts those.
pub(crate) fn stream_rng(seed: u64, round: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(splitmix(splitmix(seed) ^ splitmix(round) ^ stream))
}

pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `items` are non-empty constants, so the index is always in range.
pub(crate) fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len())]
}

/// `make(rng)` with probability `p`, else null.
pub(crate) fn optional(rng: &mut StdRng, p: f64, make: impl FnOnce(&mut StdRng) -> Value) -> Value {
    if rng.gen_bool(p) {
        make(rng)
    } else {
        Value::Null
    }
}

fn created_before(rng: &mut StdRng, updated: i64, lo: i64) -> i64 {
    if rng.gen_bool(0.3) {
        updated
    } else {
        (updated - rng.gen_range(0..=90 * DAY_SECS)).max(lo)
    }
}

/// "YYYY-MM-DDTHH:MM:SSZ", as Zendesk writes timestamps.
pub(crate) fn rfc3339(secs: i64) -> String {
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        // The virtual clock stays in the 2020s; this arm is never taken.
        None => String::from("1970-01-01T00:00:00Z"),
    }
}

fn date(secs: i64) -> String {
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => String::from("1970-01-01"),
    }
}

pub(crate) fn custom_status_id(status: &str) -> i64 {
    let index = STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len());
    CUSTOM_STATUS_BASE + index as i64 + 1
}

pub(crate) fn subject(rng: &mut StdRng) -> String {
    let topic =
        pick(rng, &SUBJECT_TOPICS).replace("{n}", &rng.gen_range(1000..100_000).to_string());
    format!("{}{topic}", pick(rng, &SUBJECT_PREFIXES))
}

pub(crate) fn description(rng: &mut StdRng) -> String {
    pick(rng, &DESCRIPTIONS).replace("{n}", &rng.gen_range(1000..100_000).to_string())
}

pub(crate) fn tags(rng: &mut StdRng, max: usize) -> Value {
    let n = rng.gen_range(0..=max);
    let mut picked: Vec<&str> = index::sample(rng, TAGS.len(), n)
        .into_iter()
        .map(|i| TAGS[i])
        .collect();
    picked.sort_unstable();
    json!(picked)
}

/// Ticket custom fields with the mixed value types real accounts send.
fn custom_fields(rng: &mut StdRng, ts: i64) -> Value {
    let values = [
        optional(rng, 0.6, |rng| {
            json!(format!("Order {} — “quoted”", rng.gen_range(1..10_000)))
        }),
        optional(rng, 0.7, |rng| {
            json!(f64::from(rng.gen_range(0..100_000_i32)) / 100.0)
        }),
        json!(rng.gen_bool(0.5)),
        match rng.gen_range(0..3) {
            0 => Value::Null,
            1 => json!([]),
            _ => tags(rng, 3),
        },
        json!(rng.gen_range(-5..1_000)),
        optional(rng, 0.5, |rng| {
            json!(date(ts + rng.gen_range(0..60) * DAY_SECS))
        }),
    ];
    Value::Array(
        CUSTOM_FIELD_IDS
            .iter()
            .zip(values)
            .map(|(id, value)| json!({"id": id, "value": value}))
            .collect(),
    )
}

fn user_fields(rng: &mut StdRng, ts: i64) -> Value {
    json!({
        "account_tier": optional(rng, 0.7, |rng| json!(pick(rng, &TIERS))),
        "lifetime_value": optional(rng, 0.8, |rng| json!(f64::from(rng.gen_range(0..1_000_000_i32)) / 100.0)),
        "newsletter": rng.gen_bool(0.4),
        "signup_date": optional(rng, 0.5, |rng| json!(date(ts - rng.gen_range(0..365) * DAY_SECS))),
        "logins": rng.gen_range(0..500),
    })
}

fn organization_fields(rng: &mut StdRng, ts: i64) -> Value {
    json!({
        "region": optional(rng, 0.8, |rng| json!(pick(rng, &REGIONS))),
        "seats": rng.gen_range(1..5_000),
        "enterprise": rng.gen_bool(0.3),
        "renewal_date": optional(rng, 0.5, |rng| json!(date(ts + rng.gen_range(1..365) * DAY_SECS))),
        "health_score": optional(rng, 0.5, |rng| json!(f64::from(rng.gen_range(0..1000_i32)) / 10.0)),
    })
}

fn photo(rng: &mut StdRng, user_id: i64) -> Value {
    let attachment = 360_100_000_000 + i64::from(rng.gen_range(0..1_000_000_u32)) * 2;
    let file = format!(
        "profile_image_{user_id}_{}",
        rng.gen_range(1_000_000..10_000_000)
    );
    let content = format!("{RECORD_BASE_URL}/system/photos/{attachment}/{file}.png");
    let thumb = format!("{RECORD_BASE_URL}/system/photos/{attachment}/{file}_thumb.png");
    json!({
        "url": format!("{RECORD_BASE_URL}/api/v2/attachments/{attachment}.json"),
        "id": attachment,
        "file_name": format!("{file}.png"),
        "content_url": content,
        "mapped_content_url": content,
        "content_type": "image/png",
        "size": rng.gen_range(1000..20_000),
        "width": 80,
        "height": 80,
        "inline": false,
        "deleted": false,
        "thumbnails": [{
            "url": format!("{RECORD_BASE_URL}/api/v2/attachments/{}.json", attachment + 1),
            "id": attachment + 1,
            "file_name": format!("{file}_thumb.png"),
            "content_url": thumb,
            "mapped_content_url": thumb,
            "content_type": "image/png",
            "size": rng.gen_range(500..5_000),
            "width": 32,
            "height": 32,
            "inline": false,
            "deleted": false,
        }],
    })
}

fn set_updated(map: &mut Map<String, Value>, ts: i64) {
    map.insert("updated_at".into(), json!(rfc3339(ts)));
}

fn flip(map: &mut Map<String, Value>, field: &str) {
    let current = map.get(field).and_then(Value::as_bool).unwrap_or(false);
    map.insert(field.into(), json!(!current));
}

/// Adds `tag` if absent, removes it if present (Zendesk keeps tags sorted and unique).
fn toggle_tag(map: &mut Map<String, Value>, tag: &str) {
    let mut tags: Vec<String> = map
        .get("tags")
        .and_then(Value::as_array)
        .map(|tags| {
            tags.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    match tags.iter().position(|t| t == tag) {
        Some(i) => {
            tags.remove(i);
        }
        None => {
            tags.push(tag.to_string());
            tags.sort_unstable();
        }
    }
    map.insert("tags".into(), json!(tags));
}

fn push_str(map: &mut Map<String, Value>, field: &str, item: String) {
    match map.get_mut(field) {
        Some(Value::Array(items)) => items.push(json!(item)),
        _ => {
            map.insert(field.into(), json!([item]));
        }
    }
}
