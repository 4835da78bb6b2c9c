import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.retry.ExponentialBackoffRetry;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.List;

public class CuratorBench {
    public static void main(String[] args) throws Exception {
        String connect = args[0];
        int clients = Integer.parseInt(args[1]);
        long millis = Long.parseLong(args[2]);
        String path = args[3];
        List<CuratorFramework> frameworks = new ArrayList<>();
        for (int i = 0; i < clients; i++) {
            CuratorFramework c = CuratorFrameworkFactory.newClient(connect, 10000, 5000, new ExponentialBackoffRetry(100, 3));
            c.start();
            c.blockUntilConnected();
            frameworks.add(c);
        }
        // The bench reads the server's counters between READY and its answer.
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        System.out.println("READY");
        System.out.flush();
        in.readLine();
        final long deadline = System.nanoTime() + millis * 1_000_000L;
        final StringBuffer out = new StringBuffer();
        List<Thread> threads = new ArrayList<>();
        final long start = System.nanoTime();
        for (int i = 0; i < clients; i++) {
            final int id = i;
            final InterProcessMutex mutex = new InterProcessMutex(frameworks.get(i), path);
            Thread t = new Thread(() -> {
                StringBuilder local = new StringBuilder();
                try {
                    while (System.nanoTime() < deadline) {
                        long asked = System.nanoTime();
                        mutex.acquire();
                        long got = System.nanoTime();
                        local.append("A ").append(id).append(' ').append(asked - start).append(' ').append(got - start).append('\n');
                        long rel = System.nanoTime();
                        mutex.release();
                        local.append("R ").append(id).append(' ').append(rel - start).append('\n');
                    }
                } catch (Exception e) {
                    local.append("E ").append(e).append('\n');
                }
                out.append(local);
            });
            threads.add(t);
            t.start();
        }
        for (Thread t : threads) t.join();
        long elapsed = System.nanoTime() - start;
        System.out.print(out);
        System.out.println("DONE " + elapsed);
        System.out.flush();
        // Wait until the bench has read the counters again (it closes our stdin).
        in.readLine();
        for (CuratorFramework c : frameworks) c.close();
        System.exit(0);
    }
}
