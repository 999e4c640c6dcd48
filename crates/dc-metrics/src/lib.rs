pub use prometheus_client;
