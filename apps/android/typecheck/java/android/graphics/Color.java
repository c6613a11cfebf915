package android.graphics;
public class Color {
  public static final int GREEN = 0xFF00FF00; public static final int RED = 0xFFFF0000;
  public static int argb(int alpha, int red, int green, int blue) { return 0; }
}
