package android.widget;
public class RadioGroup extends LinearLayout {
  public RadioGroup(android.content.Context c) { super(c); }
  public interface OnCheckedChangeListener { void onCheckedChanged(RadioGroup group, int checkedId); }
  public void setOnCheckedChangeListener(OnCheckedChangeListener listener) {}
  public void check(int id) {}
}
