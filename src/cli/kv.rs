//! `weir kv get | scan DATA_DIR TABLE`: a key-value table written by
//! `save_to_kv`, read from a stopped data directory.
//!
//! Owns: these subcommands' arguments and printed lines (`key<TAB>value`).
//! Limits: none of its own (`sink::kv::RawTable` reads the table).
//! Must never: write to the table.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::sink::kv::{self, Shape};

#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Print the value of KEY in TABLE (exit 1 if absent).
    ///
    /// Example: weir kv get /var/lib/weir totals hello
    Get {
        data_dir: PathBuf,
        table: String,
        key: String,
        /// How KEY is typed: string, u64, i64, f64 or hex (encoded bytes).
        #[arg(long, default_value = "string")]
        key_as: Shape,
        /// How values are shown: auto, string, u64, i64, f64 or hex.
        #[arg(long, default_value = "auto")]
        value_as: Shape,
    },
    /// Print every entry of TABLE, one `key<TAB>value` line each, sorted.
    ///
    /// Example: weir kv scan /var/lib/weir totals --value-as u64
    Scan {
        data_dir: PathBuf,
        table: String,
        /// How keys are shown: string, u64, i64, f64 or hex.
        #[arg(long, default_value = "string")]
        key_as: Shape,
        /// How values are shown: auto, string, u64, i64, f64 or hex.
        #[arg(long, default_value = "auto")]
        value_as: Shape,
    },
}

/// Runs one `weir kv` subcommand.
pub fn run(cmd: KvCommand) -> crate::Result<ExitCode> {
    match cmd {
        KvCommand::Get {
            data_dir,
            table,
            key,
            key_as,
            value_as,
        } => get(&data_dir, &table, &key, key_as, value_as),
        KvCommand::Scan {
            data_dir,
            table,
            key_as,
            value_as,
        } => scan(&data_dir, &table, key_as, value_as),
    }
}

fn get(
    data_dir: &Path,
    table: &str,
    key: &str,
    key_as: Shape,
    value_as: Shape,
) -> crate::Result<ExitCode> {
    let t = kv::RawTable::open(data_dir, table)?;
    match t.get(&kv::encode_key(key, key_as)?)? {
        Some(v) => {
            println!("{}", kv::show_bytes(&v, value_as));
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("no key `{key}` in table `{table}`");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn scan(data_dir: &Path, table: &str, key_as: Shape, value_as: Shape) -> crate::Result<ExitCode> {
    let t = kv::RawTable::open(data_dir, table)?;
    for (k, v) in kv::show_sorted(t.scan()?, key_as, value_as) {
        println!("{k}\t{v}");
    }
    Ok(ExitCode::SUCCESS)
}
