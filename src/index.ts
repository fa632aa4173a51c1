// Public API of toa-otel (the CLI is the main product; this is for embedding and tests).
export { Pipeline, type PipelineDeps, type PipelineTotals, type StopResult } from './pipeline.js';
export { loadConfig, defaults, redactConfig, nativeOptions, type ToaConfig, type LoadConfigOptions, type LoadedConfig } from './config.js';
export { EventDecoder, validateLayout, formatIPv4, formatIPv6, type ToaEvent, type DecodeStats } from './decode.js';
export { Enricher, containerIdFromCgroupFile, containerIdFromCgroupPath, type EnrichInfo } from './enrich.js';
export { toLogRecord, toPrevalidatedLogRecord, eventAttributes, type MapOptions } from './map.js';
export { createFastOtlpProtoLogExporter, serializeLogs, FastProtobufLogsSerializer } from './otlp-proto.js';
export {
  resolveExporter,
  StdoutLogRecordExporter,
  CountingLogRecordExporter,
  NoneLogRecordExporter,
  PrevalidatedAttributesProcessor,
  createLogPipeline,
  type ExporterChoice,
  type ExportCounters,
} from './export.js';
export { BootClock } from './clock.js';
export { ProbeError, ConfigError, UsageError, ExitCode, type ProbeErrorCode, type ConfigIssue } from './errors.js';
export { loadAddon, addonPath } from './native.js';
export { main } from './cli.js';
export type * from './native-types.js';
