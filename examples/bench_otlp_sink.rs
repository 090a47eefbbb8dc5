//! An OTLP/gRPC trace sink for the warm-path bench with traces on: accepts every export,
//! counts the spans and keeps nothing.
//!
//! `bench_otlp_sink --addr 127.0.0.1:18317` (prints the span count every 5 s while it changes).

#[path = "common/args.rs"]
mod args;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

#[derive(Default, Clone)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn main() -> anyhow::Result<()> {
    let a = args::Args::parse()?;
    let addr: SocketAddr = a.get("addr", "127.0.0.1:18317")?;
    a.finish()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let sink = Sink::default();
        let count = sink.0.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let now = count.load(Ordering::Relaxed);
                if now != last {
                    println!("spans received: {now}");
                    last = now;
                }
            }
        });
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve(addr)
            .await
    })?;
    Ok(())
}
