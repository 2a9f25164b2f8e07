import Logging

/// How the `hourglass` executable writes its logs.
public enum LogFormat: String, Sendable, CaseIterable {
  /// swift-log's human-readable lines: timestamp, level, label, metadata, message.
  case text
  /// One JSON object per line (``JSONLogHandler``).
  case json

  /// A log handler factory for `LoggingSystem.bootstrap`, writing to standard output. Only an
  /// executable bootstraps the logging system; libraries take a `Logger`.
  public func makeHandler(label: String) -> any LogHandler {
    switch self {
    case .text: StreamLogHandler.standardOutput(label: label)
    case .json: JSONLogHandler(label: label, output: .standardOutput)
    }
  }
}
