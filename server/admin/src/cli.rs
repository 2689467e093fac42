//! `arbiter admin` and `arbiter admin bootstrap`: flags, each also read from
//! `ARBITER_<FLAG>` (DESIGN §3).

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: Option<AdminCommand>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create the first tenant and its owner, and print a platform-operator API key once,
    /// as the last line (`api_key=<key>`).
    Bootstrap(BootstrapArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The database (`postgres://user@host/db`); the admin holds no other state.
    #[arg(long, env = "ARBITER_POSTGRES", hide_env_values = true, required = true)]
    pub postgres: Option<String>,
    /// Apply the migrations (and install the platform schema) before serving.
    #[arg(long, env = "ARBITER_MIGRATE")]
    pub migrate: bool,
    /// HTTP listen address (port 0 picks a free port).
    #[arg(long, env = "ARBITER_ADDR", default_value = "127.0.0.1:8081")]
    pub addr: String,
    /// The PDP asked for the admin's own authorization decisions.
    #[arg(long, env = "ARBITER_PDP_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub pdp_endpoint: String,
    /// The PDP's preshared key, if it requires one.
    #[arg(long, env = "ARBITER_PDP_KEY", hide_env_values = true)]
    pub pdp_key: Option<String>,
    /// The server's secrets (JSON: `peppers`, `current_pepper`, `key_encryption_key`);
    /// without it a development default is used and logged loudly.
    #[arg(long, env = "ARBITER_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
    /// Largest page a list returns (`limit` above it is refused).
    #[arg(long, env = "ARBITER_MAX_PAGE_SIZE", default_value_t = 500)]
    pub max_page_size: u32,
    /// Requests a second allowed from one client address, in bursts of twice that (per
    /// admin instance); 0 turns the limit off.
    #[arg(long, env = "ARBITER_RATE_LIMIT", default_value_t = 200)]
    pub rate_limit: u32,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ARBITER_MAX_BODY_SIZE", default_value_t = 1 << 20)]
    pub max_body_size: usize,
    /// Largest bulk provisioning body (`POST /v1/tenants/{id}/bulk`), in bytes.
    #[arg(long, env = "ARBITER_MAX_BULK_SIZE", default_value_t = 512 << 20)]
    pub max_bulk_size: usize,
    /// The environment whose active Cedar policies this deployment's PDP enforces
    /// (`/v1/policies`: policies of other environments are kept, not enforced here).
    #[arg(long, env = "ARBITER_ENVIRONMENT", default_value = "production")]
    pub environment: String,
    /// Seconds between turns of the background jobs (delegations that start; one
    /// instance at a time runs them).
    #[arg(long, env = "ARBITER_JOBS_INTERVAL", default_value_t = 1.0)]
    pub jobs_interval: f64,
    /// Lets alert webhooks use http:// and reach loopback, private and link-local
    /// addresses (development and tests only: a webhook URL is a tenant's input).
    #[arg(long, env = "ARBITER_WEBHOOK_ALLOW_PRIVATE_NETWORKS")]
    pub webhook_allow_private_networks: bool,
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    #[arg(long, env = "ARBITER_POSTGRES", hide_env_values = true)]
    pub postgres: String,
    /// The first tenant's slug (`acme`).
    #[arg(long)]
    pub tenant: String,
    /// The first tenant's owner.
    #[arg(long)]
    pub email: String,
    #[arg(long, env = "ARBITER_SECRETS_FILE")]
    pub secrets_file: Option<PathBuf>,
}
