import NIOCore

/// What one side of a connection is willing to receive, announced in its SETTINGS frame.
///
/// Each limit constrains the *peer*: a side that announces `maxFrameSize = 65536` refuses a
/// larger frame from the other side. Until a side's SETTINGS arrive, the peer assumes
/// ``defaults``.
public struct ConnectionSettings: Hashable, Sendable {
  /// The smallest maximum frame size a side may announce.
  public static let minimumFrameSize = 16_384

  /// Largest frame payload accepted, in bytes.
  public var maxFrameSize: Int
  /// Largest message accepted (all fragments together), in bytes.
  public var maxMessageSize: Int
  /// Most streams the peer may have open towards this side at once.
  public var maxConcurrentStreams: Int
  /// Messages the peer may send on a new stream before this side grants more with CREDIT.
  public var initialStreamCredit: Int
  /// How often this side pings a quiet connection; `nil` when it does not.
  public var keepaliveInterval: TimeAmount?

  /// The protocol's defaults (docs/protocol.md).
  public static let defaults = ConnectionSettings(
    maxFrameSize: 65_536,
    maxMessageSize: 4 * 1024 * 1024,
    maxConcurrentStreams: 1024,
    initialStreamCredit: 64,
    keepaliveInterval: nil
  )

  /// Creates settings.
  public init(
    maxFrameSize: Int,
    maxMessageSize: Int,
    maxConcurrentStreams: Int,
    initialStreamCredit: Int,
    keepaliveInterval: TimeAmount?
  ) {
    self.maxFrameSize = maxFrameSize
    self.maxMessageSize = maxMessageSize
    self.maxConcurrentStreams = maxConcurrentStreams
    self.initialStreamCredit = initialStreamCredit
    self.keepaliveInterval = keepaliveInterval
  }

  /// Checks the values a side announces; the error names the field.
  public func validate() throws(ProtocolViolation) {
    guard maxFrameSize >= Self.minimumFrameSize, maxFrameSize <= Int(Int32.max) else {
      throw ProtocolViolation(.malformedFrame, "settings: max_frame_size \(maxFrameSize) outside \(Self.minimumFrameSize)...\(Int32.max)")
    }
    guard maxMessageSize >= 1, maxMessageSize <= Int(UInt32.max) else {
      throw ProtocolViolation(.malformedFrame, "settings: max_message_size \(maxMessageSize) outside 1...\(UInt32.max)")
    }
    guard maxConcurrentStreams >= 1 else {
      throw ProtocolViolation(.malformedFrame, "settings: max_concurrent_streams must be at least 1")
    }
    guard initialStreamCredit >= 1, initialStreamCredit <= Int(Int32.max) else {
      throw ProtocolViolation(.malformedFrame, "settings: initial_stream_credit must be between 1 and \(Int32.max)")
    }
  }
}

extension ConnectionSettings {
  /// The SETTINGS payload for these values.
  var wire: WireSettings {
    var wire = WireSettings()
    wire.maxFrameSize = UInt32(maxFrameSize)
    wire.maxMessageSize = UInt32(maxMessageSize)
    wire.maxConcurrentStreams = UInt32(maxConcurrentStreams)
    wire.initialStreamCredit = UInt32(initialStreamCredit)
    wire.keepaliveIntervalMs = keepaliveInterval.map { UInt32(clamping: $0.nanoseconds / 1_000_000) } ?? 0
    return wire
  }

  /// Settings from a SETTINGS payload; absent (zero) fields take the defaults.
  init(wire: WireSettings) {
    let d = ConnectionSettings.defaults
    self.init(
      maxFrameSize: wire.maxFrameSize == 0 ? d.maxFrameSize : Int(wire.maxFrameSize),
      maxMessageSize: wire.maxMessageSize == 0 ? d.maxMessageSize : Int(wire.maxMessageSize),
      maxConcurrentStreams: wire.maxConcurrentStreams == 0 ? d.maxConcurrentStreams : Int(wire.maxConcurrentStreams),
      initialStreamCredit: wire.initialStreamCredit == 0 ? d.initialStreamCredit : Int(wire.initialStreamCredit),
      keepaliveInterval: wire.keepaliveIntervalMs == 0 ? nil : .milliseconds(Int64(wire.keepaliveIntervalMs))
    )
  }
}
