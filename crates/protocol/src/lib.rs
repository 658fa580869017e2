//! The shared vocabulary of Traffic Dam: wire types, every Redis key and channel name, the Lua scripts that change
//! those keys together, and the settings every service reads. Services share nothing else.

pub mod settings;
