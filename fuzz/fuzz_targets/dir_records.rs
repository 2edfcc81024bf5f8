//! The directory stream's decoders (`weir::receiver::dir::records`): a chunk record
//! as stored in the WAL, and the progress file. On any input they return a
//! value or an error, never panic or allocate beyond the input's size; a
//! decoded value re-encodes to exactly the input (the formats are
//! canonical, so a damaged record can never decode as a different valid
//! one silently).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| weir::receiver::dir::records::check_canonical(data));
