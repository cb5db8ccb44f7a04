//! The ticket metric events export (`GET /api/v2/incremental/ticket_metric_events.json`),
//! derived from the tickets' history (`activity.rs`'s ticket events).
//!
//! Each ticket event yields the metric events Zendesk records for it:
//! - a new ticket: `measure` of `agent_work_time` and `pausable_update_time` (instance 0), then
//!   `activate` of `reply_time`, `requester_wait_time`, `agent_work_time`, `resolution_time`,
//!   `pausable_update_time` and `periodic_update_time` (instance 1), and `apply_sla` of
//!   `reply_time` with the SLA of its priority (`sla`: target in minutes and seconds, business
//!   hours, the policy's id, title and description);
//! - the first public comment after it: `fulfill` and `update_status` (`status`: calendar and
//!   business minutes since the ticket was created) of `reply_time`, and a `breach` (with its
//!   `sla` and `deleted: false`) when that took longer than the target;
//! - a status of pending pauses `requester_wait_time` and `agent_work_time`, on-hold pauses
//!   `agent_work_time`, open again activates both, and solved fulfils (with `update_status`)
//!   `agent_work_time`, `requester_wait_time` and `resolution_time`;
//! - a priority change applies the new priority's SLA (`apply_sla`) while the reply is awaited,
//!   and deletes the ticket's breaches: each is sent again, `deleted: true`, with its old
//!   `time`, at the export position of the change (Zendesk's export moves on by `end_time`, not
//!   by a record's `time`, for this reason).
//!
//! A metric event's id is `FIRST_METRIC_EVENT_ID + 16 × event id + n` (n: its place among the
//! event's). The export is derived again on each request (a pass over the ticket events), so it
//! costs nothing to accounts whose metric events nobody reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{json, Value};

use super::activity::{Activity, TicketChange};
use super::api::{time_page, time_params, Export, Request, Response};
use super::data::{rfc3339, State};

const FIRST_METRIC_EVENT_ID: i64 = 1_000_000_000_000_000;
/// The SLA policies tickets are measured against, by priority (the first four of the account).
const FIRST_SLA_POLICY_ID: i64 = 360_000_830_001;

/// One metric event, in export order: the second it is exported at, its id, its JSON.
pub(crate) struct Exported {
    pub(crate) second: i64,
    pub(crate) id: i64,
    pub(crate) deleted: bool,
    pub(crate) json: String,
}

/// The SLA of a priority: (policy index, reply target in minutes, business hours).
fn sla_of(priority: &str) -> (i64, i64, bool) {
    match priority {
        "urgent" => (0, 60, false),
        "high" => (1, 240, true),
        "low" => (3, 1_440, true),
        _ => (2, 480, true),
    }
}

fn sla(priority: &str) -> Value {
    let (policy, target, business) = sla_of(priority);
    let titles = [
        "Incidents",
        "VIP customers",
        "Standard",
        "Billing questions",
    ];
    json!({
        "target": target,
        "target_in_seconds": target * 60,
        "business_hours": business,
        "policy": {
            "id": FIRST_SLA_POLICY_ID + policy,
            "title": titles[policy as usize],
            "description": format!("Reply within {target} minutes ({priority} priority)"),
        },
    })
}

/// What the derivation keeps of a ticket between its events.
#[derive(Default)]
struct Ticket {
    created: i64,
    priority: String,
    status: String,
    replied: bool,
    /// Breaches not deleted: (id, time, JSON).
    breaches: Vec<(i64, i64, Value)>,
}

/// Every metric event in export order (second, then as made).
pub(crate) fn derive(activity: &Activity) -> Vec<Exported> {
    let mut tickets: HashMap<i64, Ticket> = HashMap::new();
    let mut out = Vec::new();
    for change in activity.ticket_changes() {
        let TicketChange {
            ts,
            event_id,
            ticket_id,
            ..
        } = change;
        let mut n = 0;
        let mut emit = |out: &mut Vec<Exported>,
                        metric: &str,
                        instance: i64,
                        kind: &str,
                        extra: Option<(&str, Value)>|
         -> (i64, Value) {
            let id = FIRST_METRIC_EVENT_ID + 16 * event_id + n;
            n += 1;
            let mut record = json!({
                "id": id,
                "ticket_id": ticket_id,
                "metric": metric,
                "instance_id": instance,
                "type": kind,
                "time": rfc3339(ts),
            });
            if let Some((key, value)) = extra {
                record[key] = value;
            }
            out.push(Exported {
                second: ts,
                id,
                deleted: false,
                json: record.to_string(),
            });
            (id, record)
        };
        if change.create {
            let priority = change.priority.clone().unwrap_or_else(|| "normal".into());
            for metric in ["agent_work_time", "pausable_update_time"] {
                emit(&mut out, metric, 0, "measure", None);
            }
            for metric in [
                "reply_time",
                "requester_wait_time",
                "agent_work_time",
                "resolution_time",
                "pausable_update_time",
                "periodic_update_time",
            ] {
                emit(&mut out, metric, 1, "activate", None);
            }
            emit(
                &mut out,
                "reply_time",
                1,
                "apply_sla",
                Some(("sla", sla(&priority))),
            );
            tickets.insert(
                ticket_id,
                Ticket {
                    created: ts,
                    priority,
                    status: change.status.clone().unwrap_or_else(|| "new".into()),
                    ..Ticket::default()
                },
            );
            continue;
        }
        let Some(ticket) = tickets.get_mut(&ticket_id) else {
            continue;
        };
        let minutes = (ts - ticket.created).max(0) / 60;
        let status = |minutes: i64| json!({"calendar": minutes, "business": minutes * 5 / 7});
        if let Some(priority) = change.priority.filter(|p| *p != ticket.priority) {
            for (id, _, mut record) in ticket.breaches.drain(..) {
                record["deleted"] = json!(true);
                out.push(Exported {
                    second: ts,
                    id,
                    deleted: true,
                    json: record.to_string(),
                });
            }
            if !ticket.replied {
                emit(
                    &mut out,
                    "reply_time",
                    1,
                    "apply_sla",
                    Some(("sla", sla(&priority))),
                );
            }
            ticket.priority = priority;
        }
        if change.public_comment && !ticket.replied {
            ticket.replied = true;
            emit(&mut out, "reply_time", 1, "fulfill", None);
            emit(
                &mut out,
                "reply_time",
                1,
                "update_status",
                Some(("status", status(minutes))),
            );
            let (_, target, _) = sla_of(&ticket.priority);
            if minutes > target {
                let (id, mut record) = emit(
                    &mut out,
                    "reply_time",
                    1,
                    "breach",
                    Some(("sla", sla(&ticket.priority))),
                );
                record["deleted"] = json!(false);
                if let Some(last) = out.last_mut() {
                    last.json = record.to_string();
                }
                ticket.breaches.push((id, ts, record));
            }
        }
        if let Some(next) = change.status.filter(|s| *s != ticket.status) {
            let waiting = ["pending", "hold"].contains(&ticket.status.as_str());
            match next.as_str() {
                "pending" => {
                    emit(&mut out, "requester_wait_time", 1, "pause", None);
                    emit(&mut out, "agent_work_time", 1, "pause", None);
                }
                "hold" => {
                    emit(&mut out, "agent_work_time", 1, "pause", None);
                }
                "open" | "new" if waiting => {
                    emit(&mut out, "requester_wait_time", 1, "activate", None);
                    emit(&mut out, "agent_work_time", 1, "activate", None);
                }
                "solved" => {
                    for metric in ["agent_work_time", "requester_wait_time", "resolution_time"] {
                        emit(&mut out, metric, 1, "fulfill", None);
                        emit(
                            &mut out,
                            metric,
                            1,
                            "update_status",
                            Some(("status", status(minutes))),
                        );
                    }
                }
                _ => {}
            }
            ticket.status = next;
        }
    }
    // Export order: by second, each second as made (a deletion's re-sent breaches at its
    // change's second).
    out.sort_by_key(|e| e.second);
    out
}

/// Ground truth: every metric event by id, as last exported; and the ids of deleted ones.
pub(crate) fn records(activity: &Activity) -> (Vec<Value>, BTreeSet<String>) {
    let mut last: BTreeMap<i64, Exported> = BTreeMap::new();
    for event in derive(activity) {
        last.insert(event.id, event);
    }
    let deleted = last
        .values()
        .filter(|e| e.deleted)
        .map(|e| e.id.to_string())
        .collect();
    let values = last
        .values()
        .filter_map(|e| serde_json::from_str(&e.json).ok())
        .collect();
    (values, deleted)
}

/// `GET /api/v2/incremental/ticket_metric_events.json?start_time=S[&per_page=N]`: a time
/// export (never splits a second) with `end_time`, `end_of_stream`, `next_page` and `count`.
pub(crate) fn endpoint(state: &State, request: &Request, export: &Export<'_>) -> Response {
    let (start, per_page) = match time_params(state, request, export) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let all = derive(&state.activity);
    let from = all.partition_point(|e| e.second < start);
    let page = time_page(
        || all[from..].iter().map(|e| (e.second, e.json.as_str())),
        start,
        per_page,
        export.stall_over,
    );
    let mut records = page.records;
    export.duplicate(&mut records);
    let mut next_page = format!(
        "{}/api/v2/incremental/ticket_metric_events.json?start_time={}",
        export.link_base, page.end_time
    );
    if request.param("per_page").is_some() {
        next_page.push_str(&format!("&per_page={per_page}"));
    }
    Response::page(
        "ticket_metric_events",
        &records,
        &json!({
            "count": records.len(),
            "end_of_stream": page.end_of_stream,
            "end_time": page.end_time,
            "next_page": next_page,
        }),
    )
}
