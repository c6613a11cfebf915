package android.view;
public final class MotionEvent { public final float getX() { return 0; } public final float getY() { return 0; } }
