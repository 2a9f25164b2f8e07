import Logging

/// A log handler that hands every event to a closure (its level, message, and the handler's
/// metadata merged with the event's): how a test watches what the code under it logs.
public struct EventLogHandler: LogHandler {
  private let onEvent: @Sendable (Logger.Level, String, Logger.Metadata) -> Void
  public var metadata: Logger.Metadata = [:]
  public var logLevel: Logger.Level = .trace

  /// A handler that calls `onEvent` for each event, on the thread that logs it.
  public init(_ onEvent: @escaping @Sendable (_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata) -> Void) {
    self.onEvent = onEvent
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    var merged = metadata
    if let own = event.metadata { merged.merge(own) { $1 } }
    onEvent(event.level, event.message.description, merged)
  }
}
