//! Lakes written by zendesk-lake 0.1 (a control table with one row per commit of an object and
//! the position in columns) keep working: `status` reads them as they are, and the first `sync`
//! migrates the control table in one commit and continues where 0.1 stopped.

use std::sync::Arc;

use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use serde_json::{json, Value};
use zendesk_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use zendesk_lake::arrow::json::ReaderBuilder;
use zendesk_lake::commands::status;
use zendesk_lake::lake::{ControlRow, Lake};
use zendesk_lake::sim::Round;

use crate::common::*;

/// The control table's schema in zendesk-lake 0.1.
fn legacy_schema() -> Arc<Schema> {
    let time = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let list = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        Field::new("object", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("cursor", DataType::Utf8, true),
        Field::new("start_time", DataType::Int64, false),
        Field::new("boundary", list, true),
        Field::new("watermark", time.clone(), true),
        Field::new("rows_upserted", DataType::Int64, false),
        Field::new("rows_deleted", DataType::Int64, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("data_version", DataType::Int64, false),
        Field::new("committed_at", time, false),
    ]))
}

/// Rewrite the lake's control table as zendesk-lake 0.1 kept it for the same commits, with the
/// control application ids it used (`zendesk-lake-control/<object>/<table id>`).
async fn make_legacy(lake: &Lake, rows: &[ControlRow]) {
    let legacy: Vec<Value> = rows
        .iter()
        .map(|row| {
            let table = &row.tables[&row.stream];
            json!({
                "object": row.stream,
                "seq": row.seq,
                "cursor": row.position.get("cursor"),
                "start_time": row.position["start_time"],
                "boundary": row.position.get("boundary").cloned().unwrap_or(json!([])),
                "watermark": row.watermark,
                "rows_upserted": table.upserted,
                "rows_deleted": table.deleted,
                "run_id": row.run_id,
                "data_version": table.version,
                "committed_at": row.committed_at,
            })
        })
        .collect();
    let mut decoder = ReaderBuilder::new(legacy_schema()).build_decoder().unwrap();
    decoder.serialize(&legacy).unwrap();
    let batch = decoder.flush().unwrap().unwrap();
    let mut commit = CommitProperties::default();
    for row in zendesk_lake::lake::control::latest(rows.to_vec()).values() {
        let table = lake.open(&row.stream).await.unwrap().unwrap();
        let id = table.snapshot().unwrap().metadata().id().to_owned();
        let app = format!("zendesk-lake-control/{}/{id}", row.stream);
        commit = commit.with_application_transaction(Transaction::new(app, row.seq));
    }
    lake.open("_sync_state")
        .await
        .unwrap()
        .unwrap()
        .write(vec![batch])
        .with_save_mode(SaveMode::Overwrite)
        .with_schema_mode(SchemaMode::Overwrite)
        .with_commit_properties(commit)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lake_of_version_0_1_is_migrated_and_continues_where_it_stopped() {
    let (sim, server) = start(small()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(&server, dir.path(), "");
    // The tables 0.1 had, one per stream.
    settings
        .tables
        .retain(|t| OBJECTS.contains(&t.name.as_str()));
    sync_ok(&settings).await;
    let lake = open_lake(dir.path());
    let before = lake.history().await.unwrap();
    make_legacy(&lake, &before).await;
    let newest: Vec<ControlRow> = zendesk_lake::lake::control::latest(before.clone())
        .into_values()
        .collect();
    assert!(lake.query("SELECT object FROM _sync_state").await.is_ok());

    // Read as it is, without a write.
    let streams = status::status(&lake).await.unwrap();
    assert_eq!(streams.len(), 3);
    for stream in &streams {
        let row = newest.iter().find(|r| r.stream == stream.stream).unwrap();
        assert_eq!(stream.seq, row.seq);
        assert_eq!(stream.watermark, row.watermark);
    }

    sim.apply_round(&Round {
        creates: 4,
        updates: 6,
        silent_updates: 2,
        deletes: 2,
    });
    let report = sync_ok(&settings).await;
    // It continued from 0.1's positions: only the changes were fetched.
    let tickets = report.tables.iter().find(|o| o.table == "tickets").unwrap();
    assert!(
        tickets.fetched > 0 && tickets.fetched < 20,
        "{}",
        tickets.fetched
    );
    // Migrated: the current layout, the old rows kept, one new row per stream.
    assert!(lake.query("SELECT stream FROM _sync_state").await.is_ok());
    let after = lake.history().await.unwrap();
    assert_eq!(after.len(), before.len() + 3);
    for old in &newest {
        let kept = after
            .iter()
            .find(|r| r.stream == old.stream && r.seq == old.seq)
            .unwrap();
        assert_eq!(kept.position["start_time"], old.position["start_time"]);
        assert_eq!(kept.watermark, old.watermark);
        assert!(after
            .iter()
            .any(|r| r.stream == old.stream && r.seq == old.seq + 1));
    }
    assert_lake_matches_tables(&sim, dir.path(), &OBJECTS).await;
    // A run with nothing new commits nothing.
    let report = sync_ok(&settings).await;
    assert!(report.tables.iter().all(|o| o.commits == 0));
}

/// The migration's commit applied by the store with its answer lost (the client's retry told
/// it exists, or no answer at all): the migration is done, once, every row kept.
#[tokio::test]
async fn a_migration_whose_answer_is_lost_is_done_once() {
    use zendesk_lake::lake::faultstore::Plan;
    for fault in ["exists", "lost"] {
        let (_sim, server) = start(small()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut settings = settings(&server, dir.path(), "");
        settings
            .tables
            .retain(|t| OBJECTS.contains(&t.name.as_str()));
        sync_ok(&settings).await;
        let lake = open_lake(dir.path());
        let before = lake.history().await.unwrap();
        make_legacy(&lake, &before).await;
        // The rows as a lake of 0.1 reads: the migration keeps them as they are.
        let legacy = lake.history().await.unwrap();
        assert_eq!(legacy.len(), before.len());
        let version = lake.open("_sync_state").await.unwrap().unwrap().version();
        let plan = Arc::new(
            Plan::parse(&format!("{fault} create *_sync_state/_delta_log/*.json #1")).unwrap(),
        );
        open_lake(dir.path())
            .with_faults(plan.clone())
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("{fault}: {e}"));
        assert_eq!(plan.injected(), 1, "{fault}");
        let table = lake.open("_sync_state").await.unwrap().unwrap();
        assert_eq!(
            table.version(),
            version.map(|v| v + 1),
            "{fault}: one commit"
        );
        assert!(lake.query("SELECT stream FROM _sync_state").await.is_ok());
        assert_eq!(lake.history().await.unwrap(), legacy, "{fault}");
    }
}
