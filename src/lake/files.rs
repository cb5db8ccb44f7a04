//! A table's data files (docs/ARCHITECTURE.md, "Layout and merges", "Layout and maintenance").
//!
//! The splice and the rewrites of maintenance write and read data files themselves rather than
//! through deltalake's operations, so that they build their own commits, made with no retry and
//! settled from the log ("Ambiguous commits"). What they share is here: a writer of new files
//! with the statistics the table asks for, abandoning or deleting files no commit will
//! reference, reading chosen files (through the table's provider, or one file's rows as stored
//! with only the byte ranges needed), and what the files of a version hold.

use std::num::NonZeroU64;
use std::sync::Arc;

use deltalake::arrow::array::{new_null_array, RecordBatch};
use deltalake::arrow::compute::{cast, concat_batches};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::datafusion::execution::memory_pool::FairSpillPool;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::SendableRecordBatchStream;
use deltalake::datafusion::prelude::{col, SessionConfig, SessionContext};
use deltalake::kernel::Add;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt};
use deltalake::parquet::arrow::arrow_reader::{ArrowReaderOptions, RowSelection};
use deltalake::parquet::arrow::async_reader::AsyncFileReader;
use deltalake::parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use deltalake::table::config::TablePropertiesExt;
use deltalake::{DeltaResult, DeltaTable, Path};
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt, TryStreamExt};
use tracing::warn;

use super::{Error, Result};

/// Memory a sort may hold before it spills to disk.
const SORT_MEMORY: usize = 512 << 20;

/// A writer of data files of `table` of about `target` bytes, with the statistics the table's
/// properties ask for.
pub(crate) fn writer(table: &DeltaTable, target: NonZeroU64) -> DeltaResult<DeltaWriter> {
    let state = table.snapshot()?;
    let properties = state.table_config();
    let config = WriterConfig::new(
        state.snapshot().arrow_schema(),
        Vec::new(),
        None,
        Some(target),
        None,
        properties.num_indexed_cols(),
        properties
            .data_skipping_stats_columns
            .as_ref()
            .map(|columns| columns.iter().map(|c| c.to_string()).collect()),
    );
    Ok(DeltaWriter::new(
        table.log_store().object_store(None),
        config,
    ))
}

/// Abandon `writer` after a failure: its open file's upload is aborted (a multipart upload left
/// open is invisible to vacuum); files it already completed are orphans vacuum removes past
/// retention.
pub(crate) async fn abort(name: &str, writer: DeltaWriter) {
    if let Err(error) = writer.abort().await {
        warn!(table = name, %error, "could not abort the files being written");
    }
}

/// The rows of the files `adds` of `table`, sorted by `sort_by` when given (in a memory pool of
/// [`SORT_MEMORY`] that spills to disk). Batches may carry text as views: see [`as_table`].
pub(crate) async fn scan(
    name: &str,
    table: &DeltaTable,
    adds: Vec<Add>,
    sort_by: Option<&str>,
) -> Result<SendableRecordBatchStream> {
    scan_within(name, table, adds, sort_by, SORT_MEMORY).await
}

/// [`scan`] with a sort's memory of `memory` bytes.
async fn scan_within(
    name: &str,
    table: &DeltaTable,
    adds: Vec<Add>,
    sort_by: Option<&str>,
    memory: usize,
) -> Result<SendableRecordBatchStream> {
    // One sort, not one per core, and its merge's memory reserved before it spills: under a
    // greedy pool, two sorters' spills took all of it and the merge of the spilled runs
    // (which cannot spill) failed, so clustering a 14.9M-row table gave up.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(memory)))
        .build_arc()
        .map_err(Error::datafusion(name))?;
    let mut config = SessionConfig::new().with_sort_spill_reservation_bytes(memory / 8);
    if sort_by.is_some() {
        config = config.with_target_partitions(1);
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    table
        .update_datafusion_session(&ctx.state())
        .map_err(Error::delta(name))?;
    let provider = table
        .table_provider()
        .with_adds(adds)
        .await
        .map_err(Error::datafusion(name))?;
    let mut frame = ctx.read_table(provider).map_err(Error::datafusion(name))?;
    if let Some(column) = sort_by {
        frame = frame
            .sort(vec![col(column).sort(true, false)])
            .map_err(Error::datafusion(name))?;
    }
    frame
        .execute_stream()
        .await
        .map_err(Error::datafusion(name))
}

/// A batch as the table stores it, column by column by name: DataFusion may read text as
/// views, the files keep the table's own types; a table that gained columns after its first
/// ones holds them in its own order; a column the batch lacks (one its schema file no longer
/// has) is null.
pub(crate) fn as_table(name: &str, schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => cast(column, field.data_type())
                .map_err(|e| Error::invalid(name, format!("column {}: {e}", field.name()))),
            None => Ok(new_null_array(field.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
        Error::invalid(
            name,
            format!("rewritten rows do not fit the table's schema: {e}"),
        )
    })
}

/// Delete files written for a commit that will not be made (vacuum would remove them past the
/// retention otherwise).
pub(crate) async fn delete(name: &str, store: &dyn ObjectStore, added: &[Add]) {
    for add in added {
        let path = deltalake::Path::from(decoded(&add.path));
        if let Err(e) = store.delete(&path).await {
            warn!(table = name, file = %add.path, error = %e, "could not delete an unused file");
        }
    }
}

/// A path of the Delta log, percent-decoded (the log encodes them; the snapshot's file views
/// decode them).
pub(crate) fn decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(byte) = u8::from_str_radix(hex, 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| path.to_owned())
}

/// What [`physical`] reads of a file: by default, everything.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Read<'a> {
    /// Only these columns.
    pub columns: Option<&'a [&'a str]>,
    /// Only the rows at these positions (ascending).
    pub rows: Option<&'a [usize]>,
}

/// A file's rows as stored, deleted ones included, in their order (the positions deletion
/// vectors name), or those `read` names: every column of the table, or only some. Only the
/// byte ranges of the columns read are fetched from the store.
pub(crate) async fn physical(
    name: &str,
    table: &DeltaTable,
    file: &Add,
    path: &Path,
    schema: &SchemaRef,
    read: Read<'_>,
) -> Result<RecordBatch> {
    let failed = |e: &dyn std::fmt::Display| Error::invalid(name, format!("reading {path}: {e}"));
    let store = table.log_store().object_store(None);
    let input = FileReader {
        store,
        path: path.clone(),
        size: file.size.max(0) as u64,
    };
    let mut reader = ParquetRecordBatchStreamBuilder::new(input)
        .await
        .map_err(|e| failed(&e))?;
    let mut schema = schema.clone();
    if let Some(rows) = read.rows {
        let total = reader.metadata().file_metadata().num_rows().max(0) as usize;
        let ranges = rows.iter().map(|&i| i..i + 1);
        reader = reader.with_row_selection(RowSelection::from_consecutive_ranges(ranges, total));
    }
    if let Some(columns) = read.columns {
        let wanted = columns_in(&schema, columns);
        let roots: Vec<usize> = reader
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| columns.contains(&f.name().as_str()))
            .map(|(i, _)| i)
            .collect();
        if roots.len() != wanted.len() {
            return Err(failed(&format!("it lacks one of the columns {columns:?}")));
        }
        let mask = ProjectionMask::roots(reader.parquet_schema(), roots);
        schema = Arc::new(schema.project(&wanted).map_err(|e| failed(&e))?);
        reader = reader.with_projection(mask);
    }
    let batches: Vec<RecordBatch> = reader
        .build()
        .map_err(|e| failed(&e))?
        .try_collect()
        .await
        .map_err(|e| failed(&e))?;
    let batches = batches
        .into_iter()
        .map(|b| as_table(name, &schema, b))
        .collect::<Result<Vec<_>>>()?;
    concat_batches(&schema, &batches).map_err(|e| failed(&e))
}

/// A data file read by byte ranges from the table's store (parquet's reader of an object
/// store, which it deprecates in favour of one's own).
struct FileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl AsyncFileReader for FileReader {
    fn get_bytes(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> BoxFuture<'_, deltalake::parquet::errors::Result<bytes::Bytes>> {
        self.store
            .get_range(&self.path, range)
            .map_err(|e| ParquetError::External(Box::new(e)))
            .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, deltalake::parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(|e| ParquetError::External(Box::new(e)))
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, deltalake::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// The positions in `schema` of `columns`, in the schema's order.
fn columns_in(schema: &SchemaRef, columns: &[&str]) -> Vec<usize> {
    (0..schema.fields().len())
        .filter(|&i| columns.contains(&schema.field(i).name().as_str()))
        .collect()
}

/// The data files of a table's current version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    pub files: usize,
    pub bytes: u64,
    /// Files under a quarter of the target size.
    pub small: usize,
    /// Rows the files hold, and of them the rows deletion vectors hide.
    pub rows: u64,
    pub hidden: u64,
}

/// The data files of `table`'s version, counted; files under `small_below` bytes are small.
pub(crate) fn stats(name: &str, table: &DeltaTable, small_below: u64) -> Result<FileStats> {
    let mut stats = FileStats::default();
    for file in table
        .snapshot()
        .map_err(Error::delta(name))?
        .log_data()
        .iter()
    {
        let size = file.size().max(0) as u64;
        stats.files += 1;
        stats.bytes += size;
        if size < small_below {
            stats.small += 1;
        }
        stats.rows += file.num_records().unwrap_or(0) as u64;
        stats.hidden += file
            .deletion_vector_descriptor()
            .map_or(0, |dv| dv.cardinality.max(0) as u64);
    }
    Ok(stats)
}

/// The data files of the table's version.
#[cfg(test)]
pub(crate) fn files(table: &DeltaTable) -> std::collections::HashSet<String> {
    table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .map(|f| f.path().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sort of more rows than its memory holds spills and merges them back in key order
    /// (clustering a 14.9M-row table once failed in the merge of the spilled runs).
    #[tokio::test]
    async fn a_sort_larger_than_its_memory_spills_and_returns_every_row_in_order() {
        use crate::lake::control::tests::draft;
        use crate::lake::Lake;
        use crate::sim::{SimConfig, Simulator};
        use deltalake::arrow::array::AsArray;
        use deltalake::arrow::datatypes::Int64Type;

        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::try_new(dir.path().to_str().unwrap(), Default::default()).unwrap();
        let spec = crate::spec::find("tickets").unwrap();
        let sim = Simulator::new(SimConfig {
            tickets: 3000,
            ..SimConfig::default()
        });
        let mut records = sim.records("tickets");
        // Newest ids first, so that the files' order is not the key's.
        records.sort_by_key(|r| std::cmp::Reverse(r["id"].as_i64()));
        let now = chrono::Utc::now();
        let mut size = 0;
        for (i, chunk) in records.chunks(500).enumerate() {
            let batch = crate::decode::decode_values(spec, chunk, now)
                .unwrap()
                .batch;
            size += batch.get_array_memory_size();
            lake.upsert(spec, batch, &draft(i as i64 + 1))
                .with_expected_batch(i as i64)
                .await
                .unwrap();
        }
        let table = lake.open("tickets").await.unwrap().unwrap();
        #[allow(deprecated)]
        let adds: Vec<Add> = table
            .snapshot()
            .unwrap()
            .log_data()
            .iter()
            .map(|f| f.add_action())
            .collect();
        assert_eq!(adds.len(), 6);
        // The pool holds the rows as decoded once; as read back from parquet they take several
        // times that. Two sorters under a greedy pool of this size (the earlier setup) fail in
        // the merge of their spilled runs, as they did up to twice this size.
        let stream = scan_within("tickets", &table, adds, Some("id"), size)
            .await
            .unwrap();
        let batches: Vec<RecordBatch> = futures::TryStreamExt::try_collect(stream).await.unwrap();
        let ids: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                let ids = b.column_by_name("id").unwrap().as_primitive::<Int64Type>();
                ids.iter().flatten().collect::<Vec<_>>()
            })
            .collect();
        let mut expected: Vec<i64> = records.iter().map(|r| r["id"].as_i64().unwrap()).collect();
        expected.sort_unstable();
        assert_eq!(ids, expected);
    }

    #[test]
    fn log_paths_are_decoded() {
        assert_eq!(decoded("part-0001.parquet"), "part-0001.parquet");
        assert_eq!(decoded("a%20b/c%3Dd.parquet"), "a b/c=d.parquet");
        assert_eq!(decoded("odd%2"), "odd%2");
        assert_eq!(decoded("100%"), "100%");
    }
}
