import NIOCore
import SwiftProtobuf

@testable import HourglassRPC

/// What a client sends first, as bytes for a server handler under test: the preface, its
/// SETTINGS, then HEADERS opening stream 1.
enum ClientOpening {
  /// The opening bytes, with `settings` (the defaults unless given) and a call deadline of
  /// `timeoutMicros` (none when 0).
  static func bytes(method: String, settings: ConnectionSettings = .defaults, timeoutMicros: UInt64 = 0) throws -> ByteBuffer {
    var bytes = ByteBuffer(bytes: ConnectionPreface.bytes)
    let wireSettings: [UInt8] = try settings.wire.serializedBytes()
    FrameEncoderHandler.write(Frame(type: .settings, streamID: 0, payload: ByteBuffer(bytes: wireSettings)), into: &bytes)
    var head = WireRequestHeaders()
    head.method = method
    head.timeoutMicros = timeoutMicros
    let headers: [UInt8] = try head.serializedBytes()
    FrameEncoderHandler.write(Frame(type: .headers, streamID: 1, payload: ByteBuffer(bytes: headers)), into: &bytes)
    return bytes
  }
}
