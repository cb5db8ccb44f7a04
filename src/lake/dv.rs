//! Deletion vectors (docs/ARCHITECTURE.md, "Layout and merges"): which rows of a data file are
//! no longer live, so that changing a row rewrites nothing but a small bitmap in the log.
//!
//! A deletion vector is a set of physical row positions in a file, serialised as Delta's
//! `RoaringBitmapArray`: the magic number 1681511377 (little-endian), then a 64-bit roaring
//! treemap in its portable format. zendesk-lake stores its deletion vectors inline in the log
//! (`storageType = 'i'`): the bytes are Z85-encoded, padded with zeros to a multiple of four as
//! Delta's own writer does, and `sizeInBytes` is the length before padding. Deletion vectors
//! other writers stored in files are read by deltalake's scans; the splice rewrites such a file
//! whole instead of extending its vector.

use deltalake::kernel::{Add, DeletionVectorDescriptor, StorageType};
use roaring::RoaringTreemap;
use serde_json::Value;

/// The magic number of the portable `RoaringBitmapArray` format.
const MAGIC: u32 = 1681511377;

/// The table property that enables deletion vectors (and the protocol feature with it).
pub const PROPERTY: &str = "delta.enableDeletionVectors";

/// `rows` as an inline deletion vector.
pub fn inline(rows: &RoaringTreemap) -> DeletionVectorDescriptor {
    let mut bytes = Vec::with_capacity(4 + rows.serialized_size());
    bytes.extend_from_slice(&MAGIC.to_le_bytes());
    rows.serialize_into(&mut bytes)
        .expect("serialising into memory cannot fail");
    let size = bytes.len();
    bytes.resize(size.next_multiple_of(4), 0);
    DeletionVectorDescriptor {
        storage_type: StorageType::Inline,
        path_or_inline_dv: z85::encode(&bytes),
        offset: None,
        size_in_bytes: i32::try_from(size).unwrap_or(i32::MAX),
        cardinality: rows.len() as i64,
    }
}

/// The rows an inline deletion vector deletes; `None` when it is stored in a file.
pub fn read_inline(dv: &DeletionVectorDescriptor) -> Result<Option<RoaringTreemap>, String> {
    if dv.storage_type != StorageType::Inline {
        return Ok(None);
    }
    let bytes = z85::decode(&dv.path_or_inline_dv)
        .map_err(|e| format!("inline deletion vector is not Z85: {e}"))?;
    let size = usize::try_from(dv.size_in_bytes).unwrap_or(0);
    if size < 4 || bytes.len() < size {
        return Err(format!(
            "inline deletion vector of {} bytes, {size} announced",
            bytes.len()
        ));
    }
    let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if magic != MAGIC {
        return Err(format!("inline deletion vector has magic {magic}"));
    }
    let rows = RoaringTreemap::deserialize_from(&bytes[4..size])
        .map_err(|e| format!("inline deletion vector is unreadable: {e}"))?;
    if rows.len() as i64 != dv.cardinality {
        return Err(format!(
            "inline deletion vector holds {} rows, {} announced",
            rows.len(),
            dv.cardinality
        ));
    }
    Ok(Some(rows))
}

/// `add` with the deletion vector `rows`: the same file, its statistics marked as no longer
/// tight (their bounds may belong to deleted rows).
pub fn with_deleted(add: &Add, rows: &RoaringTreemap) -> Add {
    let mut add = add.clone();
    add.deletion_vector = Some(inline(rows));
    add.data_change = true;
    add.stats = add
        .stats
        .as_deref()
        .map(|stats| match serde_json::from_str::<Value>(stats) {
            Ok(Value::Object(mut stats)) => {
                stats.insert("tightBounds".into(), Value::Bool(false));
                Value::Object(stats).to_string()
            }
            _ => stats.to_owned(),
        });
    add
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_vectors_round_trip_and_are_padded_z85() {
        for rows in [
            RoaringTreemap::new(),
            RoaringTreemap::from_iter([0u64]),
            RoaringTreemap::from_iter([3u64, 9, 10, 11, 70_000, 5_000_000_000]),
            RoaringTreemap::from_iter(0u64..100_000),
        ] {
            let dv = inline(&rows);
            assert_eq!(dv.storage_type, StorageType::Inline);
            assert_eq!(dv.cardinality, rows.len() as i64);
            assert_eq!(dv.path_or_inline_dv.len() % 5, 0, "whole Z85 groups");
            let bytes = z85::decode(&dv.path_or_inline_dv).unwrap();
            assert_eq!(bytes.len(), (dv.size_in_bytes as usize).next_multiple_of(4));
            assert_eq!(&bytes[..4], &MAGIC.to_le_bytes());
            assert_eq!(read_inline(&dv).unwrap(), Some(rows));
        }
    }

    /// The inline deletion vector of the Delta protocol's example (rows 3, 4, 7, 11, 18 and
    /// 29), as delta-kernel's tests carry it: read, and written byte for byte the same.
    #[test]
    fn the_protocol_example_is_read_and_written_identically() {
        let theirs = DeletionVectorDescriptor {
            storage_type: StorageType::Inline,
            path_or_inline_dv: "^Bg9^0rr910000000000iXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L".to_owned(),
            offset: None,
            size_in_bytes: 44,
            cardinality: 6,
        };
        let rows = RoaringTreemap::from_iter([3u64, 4, 7, 11, 18, 29]);
        assert_eq!(read_inline(&theirs).unwrap(), Some(rows.clone()));
        assert_eq!(inline(&rows), theirs);
    }

    #[test]
    fn broken_vectors_are_refused() {
        let mut dv = inline(&RoaringTreemap::from_iter([1u64, 2]));
        dv.cardinality = 3;
        assert!(read_inline(&dv).unwrap_err().contains("3 announced"));
        let mut dv = inline(&RoaringTreemap::from_iter([1u64]));
        let mut bytes = z85::decode(&dv.path_or_inline_dv).unwrap();
        bytes[0] ^= 1;
        dv.path_or_inline_dv = z85::encode(&bytes);
        assert!(read_inline(&dv).unwrap_err().contains("magic"));
        let mut dv = inline(&RoaringTreemap::from_iter([1u64]));
        dv.size_in_bytes += 8;
        assert!(read_inline(&dv).unwrap_err().contains("announced"));
        let dv = DeletionVectorDescriptor {
            storage_type: StorageType::UuidRelativePath,
            path_or_inline_dv: "ab^-aqEH.-t@S}K{vb[*k^".into(),
            offset: Some(1),
            size_in_bytes: 36,
            cardinality: 2,
        };
        assert_eq!(read_inline(&dv).unwrap(), None);
    }
}
