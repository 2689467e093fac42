//! The migrations are embedded by `sqlx::migrate!`, which cargo does not know reads the
//! directory: a new migration file rebuilds the server through this.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
