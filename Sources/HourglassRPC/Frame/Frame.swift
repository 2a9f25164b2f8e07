import NIOCore

/// One frame of `hourglass/1`: a fixed 10-byte header and a payload.
///
/// ```
/// 0               1               2               3
/// +---------------+---------------+---------------+---------------+
/// |                  payload length (u32, big-endian)             |
/// +---------------+---------------+---------------+---------------+
/// |  frame type   |     flags     |  stream id (u32, big-endian, high bit 0) ...
/// +---------------+---------------+---------------+---------------+
///  ... stream id                  |  payload (length bytes) ...
/// +---------------+---------------+
/// ```
public struct Frame: Hashable, Sendable {
  /// The size of the header in bytes.
  public static let headerSize = 10
  /// The largest stream id: ids are 31 bits; the high bit is reserved and must be zero.
  public static let maxStreamID: UInt32 = 0x7FFF_FFFF

  /// The frame's type.
  public var type: FrameType
  /// The frame's flags.
  public var flags: FrameFlags
  /// The stream the frame belongs to; 0 for connection-level frames.
  public var streamID: UInt32
  /// The payload.
  public var payload: ByteBuffer

  /// Creates a frame.
  public init(type: FrameType, flags: FrameFlags = [], streamID: UInt32, payload: ByteBuffer) {
    self.type = type
    self.flags = flags
    self.streamID = streamID
    self.payload = payload
  }
}

extension Frame: CustomStringConvertible {
  public var description: String {
    "\(type)(stream: \(streamID), flags: 0x\(String(flags.rawValue, radix: 16)), length: \(payload.readableBytes))"
  }
}

/// The eight bytes a client sends right after the TLS handshake, before its SETTINGS frame:
/// `HGL1\r\n\r\n`. A server that reads anything else closes the connection.
public enum ConnectionPreface {
  /// The preface bytes.
  public static let bytes: [UInt8] = Array("HGL1\r\n\r\n".utf8)
}
