// Readiness probe for scripts/services/kafka: a real Admin metadata round trip
// (DescribeCluster + ListTopics), not a bare TCP connect.
// usage: java -cp '<kafka libs>/*:<dir>' KafkaReady BOOTSTRAP TIMEOUT_SECONDS [PID]
// exit 0 = ready, 1 = timed out, 3 = the broker process (PID) exited.
import java.util.Collection;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.common.Node;

public class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        long pid = args.length > 2 ? Long.parseLong(args[2]) : -1;
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, "ofs-kafka-ready");
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 3000);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 4000);
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, 100);
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500);
        String last = "no attempt";
        int code;
        try (Admin admin = Admin.create(p)) {
            while (true) {
                if (pid > 0 && !ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                    System.err.println("broker process " + pid + " exited; last error: " + last);
                    code = 3;
                    break;
                }
                try {
                    DescribeClusterResult r = admin.describeCluster();
                    Collection<Node> nodes = r.nodes().get(4, TimeUnit.SECONDS);
                    String clusterId = r.clusterId().get(4, TimeUnit.SECONDS);
                    int topics = admin.listTopics().names().get(4, TimeUnit.SECONDS).size();
                    if (!nodes.isEmpty()) {
                        System.out.println("ready cluster_id=" + clusterId + " brokers=" + nodes.size() + " topics=" + topics);
                        code = 0;
                        break;
                    }
                    last = "no brokers in metadata";
                } catch (Exception e) {
                    last = e.toString();
                }
                if (pid > 0 && !ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                    System.err.println("broker process " + pid + " exited; last error: " + last);
                    code = 3;
                    break;
                }
                if (System.nanoTime() > deadline) {
                    System.err.println("not ready: " + last);
                    code = 1;
                    break;
                }
                Thread.sleep(300);
            }
        }
        System.exit(code);
    }
}
