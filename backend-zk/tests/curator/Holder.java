// A Curator 5.4 client driven line by line over stdin, for tumbler's interop tests.
//
// Usage: java Holder CONNECT_STRING. Prints READY once connected, then one line per command:
//   mutex PATH MS | read PATH MS | write PATH MS   -> ACQUIRED or BUSY (waits at most MS ms)
//   sem PATH LIMIT QTY MS                          -> ACQUIRED or BUSY
//   release PATH                                   -> RELEASED (whatever PATH holds)
//   revoke-requested PATH                          -> YES or NO
//   latch PATH ID                                  -> STARTED (a LeaderLatch with participant ID)
//   latch-await PATH MS                            -> LEADER or NOT (waits at most MS ms)
//   latch-has PATH                                 -> YES or NO (hasLeadership)
//   latch-leader PATH                              -> LEADER <id> or NONE (getLeader)
//   latch-close PATH                               -> CLOSED
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.Collection;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.curator.framework.CuratorFramework;
import org.apache.curator.framework.CuratorFrameworkFactory;
import org.apache.curator.framework.recipes.leader.LeaderLatch;
import org.apache.curator.framework.recipes.leader.Participant;
import org.apache.curator.framework.recipes.locks.InterProcessMutex;
import org.apache.curator.framework.recipes.locks.InterProcessReadWriteLock;
import org.apache.curator.framework.recipes.locks.InterProcessSemaphoreV2;
import org.apache.curator.framework.recipes.locks.Lease;
import org.apache.curator.retry.RetryOneTime;

public class Holder {
    public static void main(String[] args) throws Exception {
        CuratorFramework client =
                CuratorFrameworkFactory.newClient(args[0], 6000, 5000, new RetryOneTime(100));
        client.start();
        client.blockUntilConnected();
        Map<String, InterProcessMutex> held = new HashMap<>();
        Map<String, Collection<Lease>> leases = new HashMap<>();
        Map<String, AtomicBoolean> revoked = new HashMap<>();
        Map<String, LeaderLatch> latches = new HashMap<>();
        System.out.println("READY");
        System.out.flush();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String line;
        while ((line = in.readLine()) != null) {
            String[] p = line.trim().split(" ");
            String answer;
            switch (p[0]) {
                case "mutex":
                case "read":
                case "write": {
                    InterProcessMutex lock;
                    if (p[0].equals("mutex")) {
                        lock = new InterProcessMutex(client, p[1]);
                    } else {
                        InterProcessReadWriteLock rw = new InterProcessReadWriteLock(client, p[1]);
                        lock = p[0].equals("read") ? rw.readLock() : rw.writeLock();
                    }
                    AtomicBoolean flag = new AtomicBoolean(false);
                    lock.makeRevocable(l -> flag.set(true));
                    if (lock.acquire(Long.parseLong(p[2]), TimeUnit.MILLISECONDS)) {
                        held.put(p[1], lock);
                        revoked.put(p[1], flag);
                        answer = "ACQUIRED";
                    } else {
                        answer = "BUSY";
                    }
                    break;
                }
                case "sem": {
                    InterProcessSemaphoreV2 sem =
                            new InterProcessSemaphoreV2(client, p[1], Integer.parseInt(p[2]));
                    Collection<Lease> got = sem.acquire(
                            Integer.parseInt(p[3]), Long.parseLong(p[4]), TimeUnit.MILLISECONDS);
                    if (got != null) {
                        leases.put(p[1], got);
                        answer = "ACQUIRED";
                    } else {
                        answer = "BUSY";
                    }
                    break;
                }
                case "release": {
                    InterProcessMutex lock = held.remove(p[1]);
                    if (lock != null) {
                        lock.release();
                    }
                    Collection<Lease> got = leases.remove(p[1]);
                    if (got != null) {
                        for (Lease lease : got) {
                            lease.close();
                        }
                    }
                    answer = "RELEASED";
                    break;
                }
                case "revoke-requested": {
                    AtomicBoolean flag = revoked.get(p[1]);
                    answer = flag != null && flag.get() ? "YES" : "NO";
                    break;
                }
                case "latch": {
                    LeaderLatch latch = new LeaderLatch(client, p[1], p[2]);
                    latch.start();
                    latches.put(p[1], latch);
                    answer = "STARTED";
                    break;
                }
                case "latch-await": {
                    boolean leads = latches.get(p[1])
                            .await(Long.parseLong(p[2]), TimeUnit.MILLISECONDS);
                    answer = leads ? "LEADER" : "NOT";
                    break;
                }
                case "latch-has": {
                    answer = latches.get(p[1]).hasLeadership() ? "YES" : "NO";
                    break;
                }
                case "latch-leader": {
                    Participant leader = latches.get(p[1]).getLeader();
                    answer = leader.isLeader() ? "LEADER " + leader.getId() : "NONE";
                    break;
                }
                case "latch-close": {
                    latches.remove(p[1]).close();
                    answer = "CLOSED";
                    break;
                }
                default:
                    answer = "UNKNOWN " + p[0];
            }
            System.out.println(answer);
            System.out.flush();
        }
        client.close();
    }
}
