// Attribute, event and metric names. Stable OpenTelemetry names come from
// @opentelemetry/semantic-conventions; unstable (incubating) and project-specific names are
// restated here, in one place, as that package recommends for incubating names.
export {
  ATTR_CLIENT_ADDRESS,
  ATTR_CLIENT_PORT,
  ATTR_NETWORK_LOCAL_ADDRESS,
  ATTR_NETWORK_LOCAL_PORT,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_NETWORK_TRANSPORT,
  ATTR_NETWORK_TYPE,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
  NETWORK_TRANSPORT_VALUE_TCP,
  NETWORK_TYPE_VALUE_IPV4,
  NETWORK_TYPE_VALUE_IPV6,
} from '@opentelemetry/semantic-conventions';

// --- incubating OpenTelemetry names (semantic-conventions 1.45 "incubating" entry) ---
/** Deprecated in OTel semconv (replaced by network.peer.address); kept by contract for old queries. */
export const ATTR_NET_PEER_IP = 'net.peer.ip';
export const ATTR_PROCESS_PID = 'process.pid';
export const ATTR_PROCESS_EXECUTABLE_NAME = 'process.executable.name';
export const ATTR_CONTAINER_ID = 'container.id';
export const ATTR_HOST_NAME = 'host.name';

// --- project names (docs/records.md; part of the contract) ---
export const EVENT_NAME_TCP_ACCEPT = 'lvs.tcp.accept';
export const ATTR_LVS_TOA_CLIENT_IP = 'lvs.toa.client_ip';
export const ATTR_LVS_TOA_CLIENT_PORT = 'lvs.toa.client_port';
export const ATTR_LVS_TOA_SOURCE = 'lvs.toa.source';
export const ATTR_LVS_TOA_KIND = 'lvs.toa.kind';
export const ATTR_LVS_TOA_TRUSTED = 'lvs.toa.trusted';
export const ATTR_LVS_TOA_REWRITTEN = 'lvs.toa.rewritten';
export const ATTR_LVS_MERGE_WINDOW_S = 'lvs.merge.window_s';
export const ATTR_LVS_MERGE_SINCE_LAST_S = 'lvs.merge.since_last_s';
export const ATTR_LVS_MERGE_SUPPRESSED_COUNT = 'lvs.merge.suppressed_count';
export const ATTR_LVS_PROBE_MODE = 'lvs.probe.mode';
export const ATTR_LVS_PROBE_DURATION_NS = 'lvs.probe.duration_ns';

// --- self-telemetry metric names (this project's; not part of the record contract) ---
/** Kernel counters from the probe (enum toa_counter), attribute `counter` = lower-case name. */
export const METRIC_PROBE_COUNTER = 'toa_otel.probe.counter';
/** Event batches / events the native reader dropped because JS did not take them in time. */
export const METRIC_PROBE_DROPPED_BATCHES = 'toa_otel.probe.dropped_batches';
export const METRIC_PROBE_DROPPED_EVENTS = 'toa_otel.probe.dropped_events';
/** BPF program run count / time (needs kernel.bpf_stats_enabled=1), attribute `program`. */
export const METRIC_PROBE_PROGRAM_RUN_COUNT = 'toa_otel.probe.program.run_count';
export const METRIC_PROBE_PROGRAM_RUN_TIME = 'toa_otel.probe.program.run_time';
/** 1 with attribute `lvs.probe.mode` = the mode in use. */
export const METRIC_PROBE_INFO = 'toa_otel.probe.info';
/** Event buffers that could not be decoded, attribute `reason`. */
export const METRIC_DECODE_ERRORS = 'toa_otel.decode.errors';
/** Log records handed to the SDK. */
export const METRIC_RECORDS_EMITTED = 'toa_otel.records.emitted';
/** Log records the exporter delivered / failed to deliver (attribute `error.type` on failure). */
export const METRIC_RECORDS_EXPORTED = 'toa_otel.records.exported';
/**
 * Log records dropped: `error.type` = queue_full (batch processor queue), retry_queue_full (oldest
 * retained records beyond export.maxQueueSize), shutdown (retained records given up at shutdown).
 */
export const METRIC_RECORDS_DROPPED = 'toa_otel.records.dropped';
/** Records kept after a retryable export failure, waiting for a re-send (gauge). */
export const METRIC_EXPORT_RETAINED = 'toa_otel.export.retained';
/** Re-send requests of retained records. */
export const METRIC_EXPORT_RETRIES = 'toa_otel.export.retries';
/** Enrichment lookups by kind (`pid`, `cgroup`, `listener`) and result (`hit`, `miss`, `error`, `not_found`). */
export const METRIC_ENRICH_LOOKUPS = 'toa_otel.enrich.lookups';

// SDK self-observability metric names we read back for the status line.
export const SDK_METRIC_PROCESSOR_LOG_PROCESSED = 'otel.sdk.processor.log.processed';
export const SDK_METRIC_PROCESSOR_LOG_QUEUE_SIZE = 'otel.sdk.processor.log.queue.size';
