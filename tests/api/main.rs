//! Black-box tests of the server through HTTP, each against its own fresh database.

mod abuse;
mod accounts;
mod chats;
mod client_contract;
mod cluster;
mod common;
mod doctor;
mod faults;
mod friends;
mod fuzz;
mod hardening;
mod http_limits;
mod hub;
mod hub_failures;
mod hub_limits;
mod limits;
mod membership;
mod memory;
mod messages;
mod migrations;
mod nats;
mod sessions;
mod startup;
mod stream;
mod web;
mod ws;
