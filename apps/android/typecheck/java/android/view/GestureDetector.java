package android.view;
public class GestureDetector {
  public interface OnGestureListener {
    boolean onDown(MotionEvent e); void onShowPress(MotionEvent e); boolean onSingleTapUp(MotionEvent e);
    boolean onScroll(MotionEvent e1, MotionEvent e2, float distanceX, float distanceY); void onLongPress(MotionEvent e);
    boolean onFling(MotionEvent e1, MotionEvent e2, float velocityX, float velocityY);
  }
  public static class SimpleOnGestureListener implements OnGestureListener {
    public boolean onDown(MotionEvent e) { return false; } public void onShowPress(MotionEvent e) {}
    public boolean onSingleTapUp(MotionEvent e) { return false; }
    public boolean onScroll(MotionEvent e1, MotionEvent e2, float dx, float dy) { return false; }
    public void onLongPress(MotionEvent e) {}
    public boolean onFling(MotionEvent e1, MotionEvent e2, float vx, float vy) { return false; }
  }
  public GestureDetector(android.content.Context context, OnGestureListener listener) {}
  public boolean onTouchEvent(MotionEvent ev) { return false; }
}
