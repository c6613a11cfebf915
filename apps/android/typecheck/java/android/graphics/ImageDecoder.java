package android.graphics;
public final class ImageDecoder implements AutoCloseable {
  public static final int ALLOCATOR_SOFTWARE = 1;
  public static abstract class Source {}
  public static class ImageInfo { public android.util.Size getSize() { return null; } }
  public interface OnHeaderDecodedListener { void onHeaderDecoded(ImageDecoder decoder, ImageInfo info, Source source); }
  public static Source createSource(android.content.ContentResolver cr, android.net.Uri uri) { return null; }
  public static Source createSource(android.content.res.AssetManager assets, String fileName) { return null; }
  public static Bitmap decodeBitmap(Source src, OnHeaderDecodedListener listener) throws java.io.IOException { return null; }
  public static Bitmap decodeBitmap(Source src) throws java.io.IOException { return null; }
  public void setAllocator(int allocator) {}
  public int getAllocator() { return 0; }
  public void setTargetSize(int width, int height) {}
  public void close() {}
}
