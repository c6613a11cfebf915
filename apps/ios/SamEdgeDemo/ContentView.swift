// Pick a photo, tap = foreground point, long-press = background point; the selected mask is
// drawn over the photo and the three multimask outputs (with their predicted IoU) can be chosen.

import CoreML
import PhotosUI
import SwiftUI
import UIKit

/// Serialises every Core ML call off the main thread.
actor PredictorWorker {
    private var predictor: SamPredictor?

    func load() throws -> String {
        let p = try SamPredictor(computeUnits: .all)
        predictor = p
        return String(format: "%@ + %@ loaded (%.2f s + %.2f s)", ModelConstants.encoderFile,
                      ModelConstants.decoderFile, p.encoderLoadSeconds, p.decoderLoadSeconds)
    }

    func setImage(_ image: CGImage) throws -> Double {
        guard let predictor else { throw SamError.missingModel(ModelConstants.encoderResource) }
        let t0 = DispatchTime.now()
        try predictor.setImage(image)
        return SamPredictor.seconds(since: t0)
    }

    func predict(_ points: [PointPrompt]) throws -> ([MaskResult], Double) {
        guard let predictor else { throw SamError.noImage }
        let t0 = DispatchTime.now()
        let masks = try predictor.predict(points: points, multimask: true)
        return (masks, SamPredictor.seconds(since: t0))
    }
}

@MainActor
final class DemoModel: ObservableObject {
    /// Photos are downscaled to this longest side first: the model sees 256 px anyway and the
    /// mask upscaling to the original size is the costly part on a 12 MP photo.
    static let maxPhotoSide: CGFloat = 1024

    @Published var photo: UIImage?
    @Published var points: [PointPrompt] = []
    @Published var masks: [MaskResult] = []
    @Published var selected = 0
    @Published var overlay: CGImage?
    @Published var status = "Loading models..."
    @Published var busy = false

    private let worker = PredictorWorker()
    private var imageReady = false

    func loadModels() async {
        do { status = try await worker.load() } catch { status = error.localizedDescription }
    }

    func setPhoto(_ image: UIImage) async {
        let upright = Self.uprightScaled(image, maxSide: Self.maxPhotoSide)
        photo = upright
        points = []
        masks = []
        overlay = nil
        imageReady = false
        guard let cg = upright.cgImage else { status = SamError.imageConversion.localizedDescription; return }
        busy = true
        defer { busy = false }
        do {
            let s = try await worker.setImage(cg)
            imageReady = true
            status = String(format: "encoder %.0f ms - tap: foreground, long-press: background", s * 1000)
        } catch {
            status = error.localizedDescription
        }
    }

    func addPoint(_ p: PointPrompt) async {
        guard imageReady else { return }
        points.append(p)
        await runDecoder()
    }

    func undo() async {
        guard !points.isEmpty else { return }
        points.removeLast()
        if points.isEmpty { masks = []; overlay = nil } else { await runDecoder() }
    }

    func select(_ index: Int) {
        selected = index
        overlay = masks.indices.contains(index) ? Self.overlayImage(masks[index]) : nil
    }

    private func runDecoder() async {
        busy = true
        defer { busy = false }
        do {
            let (m, s) = try await worker.predict(points)
            masks = m
            // start on the mask with the highest predicted IoU, as SAM demos do
            let best = m.indices.max(by: { m[$0].iou < m[$1].iou }) ?? 0
            select(best)
            status = String(format: "decoder + upscaling %.0f ms, %d point(s)", s * 1000, points.count)
        } catch {
            status = error.localizedDescription
        }
    }

    /// Applies the EXIF orientation (the encoder expects upright RGB) and limits the size.
    static func uprightScaled(_ image: UIImage, maxSide: CGFloat) -> UIImage {
        let size = image.size
        let scale = min(1, maxSide / max(size.width, size.height))
        let target = CGSize(width: (size.width * scale).rounded(), height: (size.height * scale).rounded())
        let format = UIGraphicsImageRendererFormat()
        format.scale = 1
        format.opaque = true
        return UIGraphicsImageRenderer(size: target, format: format).image { _ in
            image.draw(in: CGRect(origin: .zero, size: target))
        }
    }

    /// Mask (logits > threshold) -> translucent RGBA overlay at the photo's size.
    static func overlayImage(_ mask: MaskResult, rgb: (UInt8, UInt8, UInt8) = (30, 144, 255)) -> CGImage? {
        var pixels = [UInt8](repeating: 0, count: mask.width * mask.height * 4)
        let alpha: UInt8 = 140
        for i in 0..<(mask.width * mask.height) where mask.logits[i] > ModelConstants.maskThreshold {
            // premultiplied alpha
            pixels[i * 4] = UInt8(Int(rgb.0) * Int(alpha) / 255)
            pixels[i * 4 + 1] = UInt8(Int(rgb.1) * Int(alpha) / 255)
            pixels[i * 4 + 2] = UInt8(Int(rgb.2) * Int(alpha) / 255)
            pixels[i * 4 + 3] = alpha
        }
        guard let provider = CGDataProvider(data: Data(pixels) as CFData),
              let space = CGColorSpace(name: CGColorSpace.sRGB) else { return nil }
        return CGImage(width: mask.width, height: mask.height, bitsPerComponent: 8, bitsPerPixel: 32,
                       bytesPerRow: mask.width * 4, space: space,
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.premultipliedLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }
}

struct ContentView: View {
    @StateObject private var model = DemoModel()
    @ObservedObject private var bench = BenchmarkRunner.shared
    @State private var pickerItem: PhotosPickerItem?

    var body: some View {
        NavigationStack {
            VStack(spacing: 12) {
                photoArea
                if !model.masks.isEmpty { maskPicker }
                Text(model.status).font(.footnote).foregroundStyle(.secondary).multilineTextAlignment(.center)
                if let line = bench.status { Text(line).font(.footnote.monospaced()) }
            }
            .padding()
            .navigationTitle("SAM edge")
            .toolbar {
                ToolbarItem(placement: .topBarLeading) {
                    PhotosPicker(selection: $pickerItem, matching: .images) { Label("Photo", systemImage: "photo") }
                }
                ToolbarItemGroup(placement: .topBarTrailing) {
                    Button { Task { await model.undo() } } label: { Label("Undo", systemImage: "arrow.uturn.backward") }
                        .disabled(model.points.isEmpty)
                    Button { Task { await bench.run(BenchmarkConfig()) } } label: { Label("Benchmark", systemImage: "speedometer") }
                        .disabled(bench.running)
                }
            }
        }
        .task { await model.loadModels() }
        .onChange(of: pickerItem) { _, item in
            guard let item else { return }
            Task {
                if let data = try? await item.loadTransferable(type: Data.self), let image = UIImage(data: data) {
                    await model.setPhoto(image)
                }
            }
        }
    }

    private var photoArea: some View {
        GeometryReader { geo in
            if let photo = model.photo {
                let fit = Self.aspectFitRect(image: photo.size, in: geo.size)
                ZStack(alignment: .topLeading) {
                    Image(uiImage: photo).resizable().frame(width: fit.width, height: fit.height)
                    if let overlay = model.overlay {
                        Image(decorative: overlay, scale: 1).resizable().frame(width: fit.width, height: fit.height)
                    }
                    ForEach(Array(model.points.enumerated()), id: \.offset) { _, p in
                        Circle()
                            .fill(p.foreground ? Color.green : Color.red)
                            .overlay(Circle().stroke(.white, lineWidth: 2))
                            .frame(width: 14, height: 14)
                            .position(x: p.x / photo.size.width * fit.width, y: p.y / photo.size.height * fit.height)
                    }
                    if model.busy { ProgressView().frame(width: fit.width, height: fit.height) }
                }
                .frame(width: fit.width, height: fit.height)
                .contentShape(Rectangle())
                .gesture(promptGesture(photoSize: photo.size, viewSize: fit.size))
                .position(x: fit.midX, y: fit.midY)
            } else {
                ContentUnavailableView("Pick a photo", systemImage: "photo.on.rectangle",
                                       description: Text("Tap adds a foreground point, long-press a background point."))
                    .frame(width: geo.size.width, height: geo.size.height)
            }
        }
    }

    private var maskPicker: some View {
        Picker("Mask", selection: Binding(get: { model.selected }, set: { model.select($0) })) {
            ForEach(model.masks.indices, id: \.self) { i in
                Text(String(format: "Mask %d  IoU %.2f", i + 1, model.masks[i].iou)).tag(i)
            }
        }
        .pickerStyle(.segmented)
    }

    /// Long-press (then lift) = background point; a plain tap = foreground point.
    private func promptGesture(photoSize: CGSize, viewSize: CGSize) -> some Gesture {
        func toImage(_ p: CGPoint, foreground: Bool) -> PointPrompt {
            PointPrompt(x: Double(p.x / viewSize.width * photoSize.width),
                        y: Double(p.y / viewSize.height * photoSize.height), foreground: foreground)
        }
        let longPress = LongPressGesture(minimumDuration: 0.45)
            .sequenced(before: DragGesture(minimumDistance: 0, coordinateSpace: .local))
            .onEnded { value in
                if case .second(true, let drag?) = value {
                    Task { await model.addPoint(toImage(drag.location, foreground: false)) }
                }
            }
        let tap = SpatialTapGesture(coordinateSpace: .local).onEnded { value in
            Task { await model.addPoint(toImage(value.location, foreground: true)) }
        }
        return longPress.exclusively(before: tap)
    }

    static func aspectFitRect(image: CGSize, in bounds: CGSize) -> CGRect {
        guard image.width > 0, image.height > 0 else { return .zero }
        let scale = min(bounds.width / image.width, bounds.height / image.height)
        let size = CGSize(width: image.width * scale, height: image.height * scale)
        return CGRect(x: (bounds.width - size.width) / 2, y: (bounds.height - size.height) / 2,
                      width: size.width, height: size.height)
    }
}
