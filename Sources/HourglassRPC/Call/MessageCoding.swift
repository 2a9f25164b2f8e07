import NIOCore
import SwiftProtobuf

/// Protobuf message (de)serialisation into and out of `ByteBuffer`s.
enum MessageCoding {
  static func encode(_ message: some SwiftProtobuf.Message) throws(RPCError) -> ByteBuffer {
    do {
      let bytes: [UInt8] = try message.serializedBytes()
      return ByteBuffer(bytes: bytes)
    } catch {
      throw RPCError(code: .internal, message: "could not serialise \(type(of: message)): \(error)", cause: error)
    }
  }

  static func decode<M: SwiftProtobuf.Message>(_ type: M.Type, from buffer: ByteBuffer) throws(RPCError) -> M {
    do {
      return try M(serializedBytes: buffer.readableBytesSpan)
    } catch {
      throw RPCError(code: .invalidArgument, message: "could not parse \(M.protoMessageName): \(error)", cause: error)
    }
  }
}
