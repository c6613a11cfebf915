package android.graphics;
public class BitmapFactory {
  public static class Options { public Bitmap.Config inPreferredConfig; public boolean inScaled; }
  public static Bitmap decodeByteArray(byte[] data, int offset, int length, Options opts) { return null; }
}
