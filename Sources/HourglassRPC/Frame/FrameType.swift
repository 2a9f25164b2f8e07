/// The kind of a frame: the fifth byte of the frame header.
///
/// A struct rather than an enum: a peer may send a type this version does not know, which the
/// protocol requires receivers to ignore (docs/protocol.md, "Frame types").
public struct FrameType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  public var rawValue: UInt8

  public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// Connection settings; the first frame each side sends. Stream 0.
  public static let settings = FrameType(rawValue: 0x0)
  /// Opens a stream (client) or carries response metadata (server).
  public static let headers = FrameType(rawValue: 0x1)
  /// A message or a fragment of one.
  public static let message = FrameType(rawValue: 0x2)
  /// The server's status for a stream; ends it.
  public static let trailers = FrameType(rawValue: 0x3)
  /// Abandons a stream at once, in either direction.
  public static let reset = FrameType(rawValue: 0x4)
  /// Grants the peer more messages on a stream.
  public static let credit = FrameType(rawValue: 0x5)
  /// A liveness probe. Stream 0.
  public static let ping = FrameType(rawValue: 0x6)
  /// The answer to a PING. Stream 0.
  public static let pong = FrameType(rawValue: 0x7)
  /// The sender accepts no new streams and will close. Stream 0.
  public static let goAway = FrameType(rawValue: 0x8)

  /// Whether this version of the protocol knows the type.
  public var isKnown: Bool { rawValue <= 0x8 }

  public var description: String {
    switch rawValue {
    case 0x0: "SETTINGS"
    case 0x1: "HEADERS"
    case 0x2: "MESSAGE"
    case 0x3: "TRAILERS"
    case 0x4: "RESET"
    case 0x5: "CREDIT"
    case 0x6: "PING"
    case 0x7: "PONG"
    case 0x8: "GOAWAY"
    default: "UNKNOWN(0x\(String(rawValue, radix: 16)))"
    }
  }
}

/// The flags of a frame: the sixth byte of the frame header.
public struct FrameFlags: OptionSet, Hashable, Sendable {
  public var rawValue: UInt8

  public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// On HEADERS or MESSAGE: the sender will send no more messages on this stream (half-close).
  public static let endStream = FrameFlags(rawValue: 0x1)
  /// On MESSAGE: the message continues in the next MESSAGE frame of this stream.
  public static let more = FrameFlags(rawValue: 0x2)
}
